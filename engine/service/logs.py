"""Logging to stderr: one JSON object per line for journald and files, readable lines for a person.

``--log-format auto`` (the default) picks ``text`` when stderr is a terminal and ``json``
otherwise. The handler sits on the *root* logger, so aiohttp's, asyncio's and uvloop's records
come out in the same format as the project's own: in JSON mode a traceback is a field of one
object, never raw lines between them. Records of libraries are rate-limited per message
(:class:`~engine.core.ratelimit.RateLimitFilter`): a flood of bad requests must not fill the
journal.
With ``install_hooks`` the last ways Python writes to stderr on its own (an uncaught exception
in a thread, an "Exception ignored in ..." message, a warning) go through logging as well.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import IO, Any, Final

import orjson
from rich.console import Console
from rich.text import Text

from engine.core.ratelimit import RateLimitFilter

__all__ = [
    "LOG_FORMATS",
    "JsonFormatter",
    "TextHandler",
    "resolve_format",
    "setup_logging",
    "text_console",
]

LOG_FORMATS: Final = ("auto", "json", "text")

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName",
}

log = logging.getLogger("tickflow.logs")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's ``extra=`` fields."""
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_fields(record))
        if record.exc_info:
            exc = record.exc_info[1]
            if exc is not None:
                out["exc_type"] = type(exc).__name__
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        # orjson escapes every control character, so a message can never split the line.
        return orjson.dumps(out, default=str).decode()


_LEVEL_STYLES: Final = {
    "DEBUG": ("DEBUG", "dim"),
    "INFO": ("INFO ", "green"),
    "WARNING": ("WARN ", "yellow"),
    "ERROR": ("ERROR", "bold red"),
    "CRITICAL": ("CRIT ", "bold white on red"),
}


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every non-printable character escaped: a symbol name or a client's bytes
    must not move the cursor, clear the screen or forge a line on someone's terminal."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or (keep_newlines and ch == "\n"):
            out.append(ch)
        else:
            out.append(repr(ch)[1:-1] if ch != "'" else ch)
    return "".join(out)


class TextHandler(logging.Handler):
    """One readable line per record: time, level, message, then the key fields as ``k=v``.

    Written through a rich :class:`Console`, so a live status line on the same console
    (engine/service/console.py) stays below the scrolling log lines.
    """

    def __init__(self, console: Console, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.console = console

    def render(self, record: logging.LogRecord) -> Text:
        label, style = _LEVEL_STYLES.get(record.levelname, (record.levelname[:5], ""))
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = Text()
        line.append(f"{stamp}.{int(record.msecs):03d} ", style="dim")
        line.append(label, style=style)
        line.append(" ")
        name = record.name.removeprefix("tickflow.")
        if name != "tickflow":
            line.append(f"{printable(name)}: ", style="cyan")
        line.append(printable(record.getMessage()))
        for key, value in _fields(record).items():
            shown = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
            line.append(f"  {key}=", style="dim")
            line.append(printable(shown), style="dim bold")
        return line

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(self.render(record), soft_wrap=True, highlight=False)
            if record.exc_info:
                trace = logging.Formatter().formatException(record.exc_info)
                self.console.print(
                    Text(printable(trace, keep_newlines=True), style="red"),
                    soft_wrap=True, highlight=False,
                )
        except Exception:  # logging must never take the daemon down
            self.handleError(record)


class _Installed:
    handler: logging.Handler | None = None
    console: Console | None = None


def resolve_format(fmt: str, stream: IO[str] | None = None) -> str:
    """``json`` or ``text``: ``auto`` means text on a terminal, JSON otherwise."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    if fmt != "auto":
        return fmt
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return "text" if isatty is not None and isatty() else "json"
    except ValueError:  # a closed stream
        return "json"


def text_console() -> Console | None:
    """The console of the text handler installed by :func:`setup_logging` (None in JSON mode)."""
    return _Installed.console


def setup_logging(
    level: str = "info",
    fmt: str = "auto",
    *,
    stream: IO[str] | None = None,
    install_hooks: bool = False,
) -> str:
    """Install the stderr handler on the root logger; returns the format used (json/text).

    The ``tickflow`` loggers log at ``level``; other libraries at WARNING and above (their
    INFO chatter is not the operator's business). Calling it again replaces the handler.
    """
    stream = sys.stderr if stream is None else stream
    resolved = resolve_format(fmt, stream)
    handler: logging.Handler
    if resolved == "json":
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter())
        _Installed.console = None
    else:
        console = Console(file=stream, highlight=False, soft_wrap=True, emoji=False)
        handler = TextHandler(console)
        _Installed.console = console
    handler.addFilter(RateLimitFilter())
    root = logging.getLogger()
    if _Installed.handler is not None:
        root.removeHandler(_Installed.handler)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    _Installed.handler = handler
    own = logging.getLogger("tickflow")
    own.handlers.clear()
    own.propagate = True
    own.setLevel(level.upper())
    if install_hooks:
        _install_hooks()
    return resolved


def _install_hooks() -> None:
    logging.captureWarnings(True)
    uncaught = logging.getLogger("tickflow.uncaught")

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        uncaught.error(
            "uncaught exception in thread %s", name,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
            extra={"thread": name},
        )

    def unraisable_hook(args: Any) -> None:
        exc = args.exc_value
        uncaught.warning(
            "%s: %r", args.err_msg or "exception ignored", args.object,
            exc_info=(args.exc_type, exc, args.exc_traceback) if exc is not None else None,
        )

    threading.excepthook = thread_hook
    sys.unraisablehook = unraisable_hook
