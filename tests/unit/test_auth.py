"""One token reader for the admin API and the network intake: the same rules for both."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import AdminSettings, IntakeSettings
from engine.service import auth, netlines


def test_an_empty_variable_is_an_error_for_both_never_no_authentication() -> None:
    with pytest.raises(auth.AdminTokenError, match=r"\$TICKFLOW_ADMIN_TOKEN is set but empty"):
        auth.load_admin_token(AdminSettings(), {auth.ADMIN_TOKEN_ENV: "  "})
    with pytest.raises(netlines.IntakeError, match=r"\$TICKFLOW_INTAKE_TOKEN is set but empty"):
        netlines.load_token(IntakeSettings(), {netlines.TOKEN_ENV: ""})


def test_credentials_directory_is_expanded_for_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "admin-token").write_text("a-secret\n")
    (tmp_path / "intake-token").write_text("i-secret\n")
    for f in tmp_path.iterdir():
        f.chmod(0o600)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    adm = AdminSettings(token_file="${CREDENTIALS_DIRECTORY}/admin-token")
    intake = IntakeSettings(token_file="${CREDENTIALS_DIRECTORY}/intake-token")
    assert auth.load_admin_token(adm, {}) == "a-secret"
    assert netlines.load_token(intake, {}) == "i-secret"


def test_no_file_and_no_variable_means_no_token() -> None:
    assert auth.load_admin_token(AdminSettings(), {}) is None
    assert netlines.load_token(IntakeSettings(), {}) is None
