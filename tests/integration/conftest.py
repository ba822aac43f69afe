"""Fixtures shared by the integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without anything that would put the source tree on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.pop("TICKFLOW_NO_EXTENSIONS", None)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel built from it (``python -m build``, as ``make wheel``), once per
    test session: the wheel test and the live systemd test both install them (~90 s)."""
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True, timeout=900, env=clean_env(),
    )
    assert proc.returncode == 0, proc.stderr.decode()[-4000:]
    wheels = list(out.glob("tickflow-*.whl"))
    sdists = list(out.glob("tickflow-*.tar.gz"))
    built = sorted(p.name for p in out.iterdir())
    assert len(wheels) == 1, built
    assert len(sdists) == 1, built
    return {"wheel": wheels[0], "sdist": sdists[0]}
