"""The terminal side: log formats, the one rate limiter, the status line, `tickflow top`'s view.

Rendering is checked on rich consoles writing to a string; `tests/integration/test_terminal.py`
runs the same code in a real terminal (tmux).
"""

from __future__ import annotations

import copy
import http.server
import io
import logging
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console

from engine.core.errors import StorageError
from engine.core.ratelimit import RateLimitedLog, RateLimitFilter
from engine.service import logs
from engine.service.cli import _summary_writable, describe_failure
from engine.service.console import (
    Rates,
    StatusLine,
    format_count,
    format_money,
    format_seconds,
    status_text,
)
from engine.service.logs import JsonFormatter, TextHandler, printable, resolve_format, setup_logging
from engine.service.replay_cmd import Progress
from engine.service.status import (
    Pnl,
    StatusDocument,
    StatusUnavailable,
    decode_status,
    fetch_status,
)
from engine.service.top import TopView, run_top

# Two documents a real daemon served two seconds apart: the readers decode them into the type.
DOCS_JSON = orjson.loads((Path(__file__).parent / "data" / "status_doc_pair.json").read_bytes())
DOCS: dict[str, Any] = {
    "prev": decode_status(orjson.dumps(DOCS_JSON["prev"])),
    "cur": decode_status(orjson.dumps(DOCS_JSON["cur"])),
    "elapsed_s": DOCS_JSON["elapsed_s"],
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(name: str, msg: str, level: int = logging.WARNING, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, msg, (), None)
    record.__dict__.update(extra)
    return record


# --- the rate limiter ---------------------------------------------------------------------------


def test_rate_limited_log_budget_per_key_and_summary(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    logger = logging.getLogger("tickflow.test.rl")
    limited = RateLimitedLog(logger, limit=2, interval=5.0, clock=clock)
    caplog.set_level(logging.WARNING, logger="tickflow.test.rl")
    assert [limited.warning("idle", "idle %s", i, source="s") for i in range(4)] == [
        True, True, False, False,
    ]
    assert limited.error("refused", "refused")  # its own budget
    clock.now = 5.0
    assert limited.warning("idle", "idle again")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "idle 0", "idle 1", "refused",
        "suppressed 2 more 'idle' messages in the last 5.0 s", "idle again",
    ]
    assert caplog.records[0].event == "idle"  # type: ignore[attr-defined]
    assert caplog.records[0].source == "s"  # type: ignore[attr-defined]
    assert caplog.records[3].suppressed == 2  # type: ignore[attr-defined]
    assert limited.suppressed() == {"idle": 2, "refused": 0}


def test_rate_limited_log_flush_and_validation(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    limited = RateLimitedLog(
        logging.getLogger("tickflow.test.rl2"), limit=1, clock=clock, key_field="reason",
        what="rejections",
    )
    caplog.set_level(logging.WARNING, logger="tickflow.test.rl2")
    for _ in range(3):
        limited.warning("empty", "blank")
    clock.now = 1.5
    limited.flush()
    limited.flush()  # nothing new: no second summary
    assert [r.getMessage() for r in caplog.records] == [
        "blank", "suppressed 2 more 'empty' rejections in the last 1.5 s",
    ]
    assert caplog.records[1].reason == "empty"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="limit"):
        RateLimitedLog(logging.getLogger("x"), limit=0)
    with pytest.raises(ValueError, match="interval"):
        RateLimitedLog(logging.getLogger("x"), interval=float("nan"))


def test_rate_limit_filter_holds_back_library_floods_only() -> None:
    clock = FakeClock()
    flt = RateLimitFilter(limit=3, interval=10.0, clock=clock)
    flood = [flt.filter(_record("aiohttp.server", "Error handling request")) for _ in range(5)]
    assert flood == [True, True, True, False, False]
    # Another message of the same library, the project's own lines and INFO pass.
    assert flt.filter(_record("aiohttp.server", "Unhandled exception"))
    assert all(flt.filter(_record("tickflow.intake", "x")) for _ in range(20))
    assert all(flt.filter(_record("asyncio", "x", logging.INFO)) for _ in range(20))
    clock.now = 10.0
    after = _record("aiohttp.server", "Error handling request")
    assert flt.filter(after)
    assert after.suppressed_before == 2  # type: ignore[attr-defined]
    assert flt.suppressed()["aiohttp.server:Error handling request"] == 2


# --- log formats --------------------------------------------------------------------------------


def test_json_formatter_keeps_a_traceback_in_one_line() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord(
            "aiohttp.server", logging.ERROR, __file__, 1, "Error handling %s", ("x\ny",),
            sys.exc_info(),
        )
    text = JsonFormatter().format(record)
    assert "\n" not in text
    out = orjson.loads(text)
    assert out["msg"] == "Error handling x\ny"
    assert out["logger"] == "aiohttp.server"
    assert out["exc_type"] == "ValueError"
    assert out["exc"].startswith("Traceback (most recent call last)")
    assert "ValueError: bad\nthing" in out["exc"]


def test_text_handler_line_has_time_level_message_and_fields() -> None:
    stream = io.StringIO()
    handler = TextHandler(Console(file=stream, width=200, color_system=None))
    record = _record("tickflow.storage", "recovered %s", logging.INFO, symbols=20, path="a.db")
    record.args = ("state",)
    handler.emit(record)
    (line,) = stream.getvalue().splitlines()
    assert line[2] == ":"
    assert line[8] == "."
    assert " INFO  storage: recovered state  symbols=20  path=a.db" in line


def test_text_handler_escapes_terminal_controls() -> None:
    stream = io.StringIO()
    handler = TextHandler(Console(file=stream, width=200, color_system=None))
    handler.emit(_record("tickflow.intake", "symbol \x1b[2J\u009b31m", sym="AA\u200bPL\nX"))
    out = stream.getvalue()
    assert "\x1b" not in out
    assert "\u009b" not in out
    assert "\u200b" not in out
    assert "\\x1b[2J" in out
    assert "\\x9b31m" in out
    assert "sym=AA\\u200bPL\\nX" in out
    assert out.count("\n") == 1
    assert printable("ok") == "ok"
    assert printable("a\nb", keep_newlines=True) == "a\nb"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_format_is_text_on_a_terminal_and_json_otherwise() -> None:
    assert resolve_format("auto", _Tty()) == "text"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("json", _Tty()) == "json"
    assert resolve_format("text", io.StringIO()) == "text"
    with pytest.raises(ValueError, match="log format"):
        resolve_format("yaml", io.StringIO())


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root, own = logging.getLogger(), logging.getLogger("tickflow")
    saved = (root.handlers[:], root.level, own.handlers[:], own.level, own.propagate)
    installed = (logs._Installed.handler, logs._Installed.console)
    try:
        yield
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        own.handlers[:], own.level, own.propagate = saved[2], saved[3], saved[4]
        logs._Installed.handler, logs._Installed.console = installed


@pytest.mark.usefixtures("restore_logging")
def test_setup_logging_puts_libraries_on_the_same_json_stream() -> None:
    stream = io.StringIO()
    assert setup_logging("info", "auto", stream=stream) == "json"
    try:
        raise ConnectionResetError("gone")
    except ConnectionResetError:
        logging.getLogger("aiohttp.server").exception("Error handling request from %s", "::1")
    logging.getLogger("asyncio").info("chatter below WARNING is not the operator's business")
    logging.getLogger("tickflow.cli").info("tickflow ready", extra={"config_version": "abc"})
    lines = stream.getvalue().splitlines()
    records = [orjson.loads(line) for line in lines]  # every line is one JSON object
    assert [r["logger"] for r in records] == ["aiohttp.server", "tickflow.cli"]
    assert records[0]["exc_type"] == "ConnectionResetError"
    assert records[1]["config_version"] == "abc"
    # Called again (text this time): the handler is replaced, not added.
    text = _Tty()
    assert setup_logging("warning", "auto", stream=text) == "text"
    logging.getLogger("tickflow.cli").warning("only here")
    assert "only here" not in stream.getvalue()
    assert "WARN  cli: only here" in re.sub(r"\x1b\[[0-9;]*m", "", text.getvalue())


# --- numbers, rates, the status line -----------------------------------------------------------


def test_formatters() -> None:
    assert format_seconds(0.000285) == "285µs"
    assert format_seconds(0.0123) == "12.3ms"
    assert format_seconds(2.5) == "2.50s"
    assert format_seconds(None) == format_seconds(float("nan")) == format_seconds(0) == "-"
    assert format_count(12) == "12"
    assert format_count(38.5) == "38.5"
    assert format_count(162.5) == "162"
    assert format_count(1234567) == "1,234,567"
    assert format_count(12_345_678) == "12.3M"
    assert format_money(-3.5) == "-3.50"
    assert format_money(4128.05) == "+4,128.05"
    assert Pnl(realized=10.0, unrealized=-2.0, fees=1.5).net == 6.5


def test_rates_are_differences_of_two_documents() -> None:
    prev, cur, elapsed = DOCS["prev"], DOCS["cur"], DOCS["elapsed_s"]
    rates = Rates(prev, cur, elapsed)
    assert rates.events == (927 - 525) / 2.0
    assert rates.runs("high_freq_trading") == (183 - 106) / 2.0
    assert rates.runs("trend_trading") == (744 - 419) / 2.0
    assert rates.fills == (506 - 495) / 2.0
    assert rates.commits == (898 - 507) / 2.0
    assert Rates(None, cur, 0.0).events is None  # the first sample has no rate
    # A daemon restarted behind the same URL: counters went down, the rate is 0, not negative.
    assert Rates(cur, prev, 1.0).events == 0


def test_status_text_shows_rates_latency_queue_fills_and_pnl() -> None:
    text = status_text(DOCS["cur"], Rates(DOCS["prev"], DOCS["cur"], 2.0)).plain
    assert text.startswith("● ready 201 ev/s")
    assert "high_freq_trading 38.5 runs/s p99 286µs" in text
    assert "trend_trading 162 runs/s p99 170µs" in text
    assert "queue 0  agents 0/5" in text
    assert "fills 506  P&L +4,128.05" in text
    first = status_text(DOCS["cur"], Rates(None, DOCS["cur"], 0.0)).plain
    assert "- ev/s" in first
    assert "- runs/s" in first


def test_status_text_wraps_between_parts_on_a_narrow_terminal() -> None:
    rates = Rates(DOCS["prev"], DOCS["cur"], 2.0)
    one = status_text(DOCS["cur"], rates).plain
    narrow = status_text(DOCS["cur"], rates, width=80).plain.splitlines()
    assert len(narrow) == 3
    assert all(len(line) <= 80 for line in narrow)
    assert "  │ ".join(narrow) == one  # the same parts, none cut
    assert narrow[1].startswith("trend_trading 162 runs/s")


def test_status_line_samples_against_the_previous_sample() -> None:
    clock = FakeClock()
    docs = iter([DOCS["prev"], DOCS["cur"]])
    line = StatusLine(Console(file=io.StringIO()), lambda: next(docs), interval_s=2.0, clock=clock)
    assert "- ev/s" in line.sample().plain
    clock.now = 2.0
    assert "201 ev/s" in line.sample().plain
    with pytest.raises(ValueError, match="interval"):
        StatusLine(Console(file=io.StringIO()), StatusDocument, interval_s=0)


# --- tickflow top -------------------------------------------------------------------------------


def _render(view: TopView, width: int = 120) -> str:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(view.render())
    return console.export_text()


def test_top_view_renders_a_saved_status_document() -> None:
    clock = FakeClock()
    view = TopView("http://127.0.0.1:9108", clock=clock)
    raw = copy.deepcopy(DOCS_JSON["cur"])
    raw["positions"]["EV\x1b[2JIL"] = {
        "symbol": "EV\x1b[2JIL", "qty": 5.0, "avg_cost": 1.0, "realized_pnl": -1.0,
    }
    cur = decode_status(orjson.dumps(raw))
    view.update(DOCS["prev"])
    clock.now = 2.0
    view.update(cur)
    screen = _render(view)
    assert "tickflow 0.1.0 at http://127.0.0.1:9108" in screen
    assert "● ready" in screen
    rows = {line.split()[0]: line.split() for line in screen.splitlines() if "_trading" in line}
    # workflow, state, prio, runs/s, completed, failed, p50, p99, queued, running
    assert rows["high_freq_trading"][1:] == [
        "active", "0", "38.5", "183", "0", "115µs", "286µs", "0", "0/3",
    ]
    assert rows["trend_trading"][1:] == [
        "active", "2", "162", "744", "0", "85µs", "170µs", "0", "0/5",
    ]
    assert "events/s  201" in screen
    assert "agents   0/5 busy" in screen
    assert "queue    0/65536" in screen
    assert "commits/s 196" in screen
    assert "backlog   0" in screen
    assert "fills 506  P&L +4,128.05" in screen
    for symbol in ("AAPL", "AMZN", "MSFT", "NVDA"):
        assert symbol in screen
    assert "EV\\x1b[2JIL" in screen
    assert "\x1b" not in screen


def test_top_view_of_a_daemon_that_is_down_says_so_and_counts_retries() -> None:
    view = TopView("http://127.0.0.1:1")
    view.update(DOCS["cur"])
    view.update(None, "Connection refused")
    view.update(None, "Connection refused")
    screen = _render(view, width=80)
    assert "no daemon answers at http://127.0.0.1:1" in screen
    assert "Connection refused" in screen
    assert "retrying (attempt 2)" in screen
    # Back up: the first document after an outage has no rates (they would span the outage).
    view.update(DOCS["cur"])
    assert "events/s  -" in _render(view)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        routes: dict[str, tuple[int, bytes]] = {
            "/json/status": (200, orjson.dumps(DOCS_JSON["cur"])),
            "/text/status": (200, b"<html>hello</html>"),
            "/other/status": (200, b'{"hello": 1}'),
        }
        code, body = routes.get(self.path, (404, b"no"))
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_fetch_status_document_reasons(http_server: str) -> None:
    assert fetch_status(http_server + "/json").version == "0.1.0"
    with pytest.raises(StatusUnavailable, match="status is not JSON"):
        fetch_status(http_server + "/text")
    with pytest.raises(StatusUnavailable, match="unexpected /status document"):
        fetch_status(http_server + "/other")
    with pytest.raises(StatusUnavailable, match="HTTP 404"):
        fetch_status(http_server + "/nothing")
    with pytest.raises(StatusUnavailable, match="refused"):
        fetch_status("http://127.0.0.1:1")
    with pytest.raises(StatusUnavailable):
        fetch_status("nonsense")


def test_run_top_off_a_terminal_stops_after_count(http_server: str) -> None:
    out = io.StringIO()
    console = Console(file=out, width=120, color_system=None)
    code = run_top(http_server + "/json", 0.01, count=2, console=console, keys=io.StringIO())
    assert code == 0
    assert "high_freq_trading" in out.getvalue()
    with pytest.raises(ValueError, match="interval"):
        run_top(http_server, float("inf"))


# --- the command line's failure paths -----------------------------------------------------------


def test_describe_failure_flattens_task_group_errors() -> None:
    group = ExceptionGroup(
        "unhandled errors in a TaskGroup",
        [StorageError("db: commit failed, stopping: disk full"),
         ExceptionGroup("inner", [OSError(28, "No space left on device")]),
         StorageError("db: commit failed, stopping: disk full")],
    )
    assert describe_failure(group) == (
        "db: commit failed, stopping: disk full; OSError: [Errno 28] No space left on device"
    )
    assert describe_failure(KeyError()) == "KeyError"


def test_summary_path_is_checked_before_the_run(tmp_path: Path) -> None:
    assert _summary_writable(tmp_path / "s.json") is None
    assert "is a directory" in str(_summary_writable(tmp_path))
    assert "does not exist" in str(_summary_writable(tmp_path / "no" / "s.json"))


def test_replay_progress_is_json_when_logs_are() -> None:
    stream = io.StringIO()
    Progress(10, stream, as_json=True).show(5)
    record = orjson.loads(stream.getvalue())
    assert record["msg"].startswith("replay 5/10 lines")
    assert (record["level"], record["done"], record["total"]) == ("info", 5, 10)
    tty = _Tty()
    Progress(10, tty, as_json=True).show(5)  # a terminal keeps the rewritten line
    assert tty.getvalue().startswith("\r")
