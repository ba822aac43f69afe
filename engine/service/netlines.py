"""JSON-lines framing and intake credentials: the parts of network intake with no sockets.

:class:`LineSplitter` turns a byte stream into lines, holding at most one (partial) line and
rejecting an oversized one as soon as it is known to be too long; :func:`load_token` reads the
optional shared secret. Both are pure and fuzzed on their own (tests/unit/test_netintake_decode.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Final

import msgspec

from engine.config import IntakeSettings
from engine.core.errors import TickflowError
from engine.service.auth import read_token

__all__ = ["TOKEN_ENV", "IntakeError", "LineSplitter", "Oversized", "is_loopback", "load_token"]

TOKEN_ENV: Final = "TICKFLOW_INTAKE_TOKEN"


class IntakeError(TickflowError, OSError):
    """The intake could not start: an address in use, an unreadable token file, ..."""


# -- the pure part: bytes in, lines out --------------------------------------------------------


class Oversized(msgspec.Struct, frozen=True):
    """A line known to exceed the limit; ``seen`` is how many of its bytes had arrived."""

    seen: int


class LineSplitter:
    """Cuts a byte stream into lines (without their ``\\n``), never holding more than one line.

    ``feed`` returns, in stream order, each complete line as ``bytes`` and each line found too
    long as :class:`Oversized` -- reported once, as soon as it is known (even before its newline
    arrives), after which its remaining bytes are skipped up to the next newline. A line may end
    in ``\\r\\n``; the ``\\r`` is left on (JSON allows it as trailing whitespace) and not counted
    against the limit, as in :meth:`engine.intake.EventDecoder.decode`.
    """

    __slots__ = ("_buf", "_discarding", "_limit")

    def __init__(self, max_line_bytes: int) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be >= 1")
        self._limit = max_line_bytes
        self._buf = b""
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished line held (at most ``max_line_bytes + 1``)."""
        return len(self._buf)

    def _too_long(self, line: bytes) -> bool:
        size = len(line)
        if size > self._limit and line.endswith(b"\r"):
            size -= 1
        return size > self._limit

    def feed(self, data: bytes) -> list[bytes | Oversized]:
        out: list[bytes | Oversized] = []
        parts = data.split(b"\n")
        tail = parts.pop()  # the bytes after the last newline: an unfinished line
        if parts:
            if self._discarding:
                # The first part is the rest of a line already reported as Oversized.
                self._discarding = False
                del parts[0]
            else:
                parts[0] = self._buf + parts[0]
            self._buf = b""
            for line in parts:
                out.append(Oversized(len(line)) if self._too_long(line) else line)
        elif self._discarding:
            return out
        buf = self._buf + tail if self._buf else tail
        # +1: a trailing "\r" may yet turn out to be half of a "\r\n" terminator.
        if len(buf) > self._limit + 1:
            out.append(Oversized(len(buf)))
            buf = b""
            self._discarding = True
        self._buf = buf
        return out

    def finish(self) -> bytes | None:
        """At end of stream: the unfinished line left over (None if there is none)."""
        buf, self._buf = self._buf, b""
        self._discarding = False
        return buf or None


# -- configuration ---------------------------------------------------------------------------


def load_token(
    settings: IntakeSettings, environ: Mapping[str, str] | None = None
) -> str | None:
    """The intake's shared secret: ``[intake] token_file``, else ``$TICKFLOW_INTAKE_TOKEN``,
    else None (see :func:`engine.service.auth.read_token`)."""
    return read_token("intake", settings.token_file, TOKEN_ENV, environ, IntakeError)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
