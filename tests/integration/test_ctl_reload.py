"""``tickflow reload`` (engine/service/ctl.py, the unit's ``ExecReload=``) against a real daemon
and real sockets: exit 0 only when the daemon took the new file, 1 with the reason otherwise."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.service.cli import main
from tests.integration.service_support import Daemon, write_config

pytestmark = pytest.mark.slow

TOKEN = "ctl-test-token"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Path, Path]]:
    tmp = tmp_path_factory.mktemp("ctl")
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    config = tmp / "tickflow.toml"
    write_config(config, db=tmp / "state.db", token_file=token_file)
    d = Daemon(config, tmp)
    try:
        yield d.start(), config, token_file
    finally:
        d.close()


def _reload(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["reload", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_accepted_reload_exits_0(
    daemon: tuple[Daemon, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    d, config, token_file = daemon
    before = d.status()["config_version"]
    write_config(config, db=config.parent / "state.db", token_file=token_file, sleep_s=0.1)
    code, out, err = _reload(capsys, "--url", d.url(""), "--token-file", str(token_file))
    assert code == 0, err
    after = d.status()["config_version"]
    assert after != before
    assert f"{before} -> {after}" in out


def test_refused_reload_exits_1_with_the_reason_and_the_daemon_keeps_its_config(
    daemon: tuple[Daemon, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    d, config, token_file = daemon
    good = config.read_text()
    running = d.status()["config_version"]
    config.write_text("[engine]\nagents = 0\n")
    try:
        code, out, err = _reload(capsys, "--url", d.url(""), "--token-file", str(token_file))
    finally:
        config.write_text(good)
    assert code == 1
    assert out == ""
    assert "refused (invalid)" in err
    assert "agents" in err  # the loader's message, naming the key
    assert f"keeps config {running}" in err
    status = d.status()
    assert status["config_version"] == running
    assert status["running"] is True


def test_url_from_the_environment(
    daemon: tuple[Daemon, Path, Path], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d, _, _ = daemon
    monkeypatch.setenv("TICKFLOW_ADMIN_URL", d.url(""))
    monkeypatch.setenv("TICKFLOW_ADMIN_TOKEN", TOKEN)
    code, _, err = _reload(capsys)
    assert code == 0, err


def test_wrong_token_exits_1_and_reloads_nothing(
    daemon: tuple[Daemon, Path, Path], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d, _, _ = daemon
    before = d.status()["reloads"]
    monkeypatch.setenv("TICKFLOW_ADMIN_TOKEN", "not-the-token")
    code, _, err = _reload(capsys, "--url", d.url(""))
    assert code == 1
    assert "HTTP 401" in err
    monkeypatch.delenv("TICKFLOW_ADMIN_TOKEN")
    code, _, err = _reload(capsys, "--url", d.url(""))
    assert code == 1
    assert "HTTP 401" in err
    assert d.status()["reloads"] == before


def test_token_file_problems_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "http://127.0.0.1:9"  # never reached: the token is read first
    code, _, err = _reload(capsys, "--url", url, "--token-file", str(tmp_path / "missing"))
    assert code == 1
    assert "cannot read" in err
    empty = tmp_path / "empty"
    empty.write_text("\n")
    code, _, err = _reload(capsys, "--url", url, "--token-file", str(empty))
    assert code == 1
    assert "is empty" in err
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    code, _, err = _reload(capsys, "--url", url, "--token-file", "${CREDENTIALS_DIRECTORY}/t")
    assert code == 1
    assert "unset variable" in err


def test_nothing_listening_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        code, _, err = _reload(capsys, "--url", f"http://127.0.0.1:{port}", "--timeout", "5")
    assert code == 1
    assert "no answer" in err


class _NotTickflow(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = b"<html>hello</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output clean


def test_something_else_answering_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _NotTickflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        code, _, err = _reload(capsys, "--url", f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert code == 1
    assert "not a tickflow admin API" in err


def test_bad_timeout_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _reload(capsys, "--timeout", "0")
    assert code == 2
    assert "--timeout" in err
