"""Pure-Python twin of :mod:`fastpath._jsonw`: the same API, writing the same bytes.

A :class:`JsonWriter` appends JSON to one buffer piece by piece, for the storage records
(``engine.core.records``): integers as digits, short ASCII strings copied, a float that is an
exact multiple of a millionth as that integer with a decimal point, anything else through
msgspec. See the compiled module for why.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

__all__ = ["JsonWriter"]

_encode = msgspec.json.Encoder().encode
_EXACT = 9007199254740992.0  # 2**53: below it every integer is a double
_LLONG = 1 << 63


class JsonWriter:
    __slots__ = ("_buf",)

    def __init__(self, capacity: int = 4096) -> None:
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf)

    def raw(self, piece: bytes) -> None:
        """Append ``piece``, JSON already."""
        if not isinstance(piece, bytes):
            raise TypeError(f"expected bytes, got {type(piece).__name__}")
        self._buf += piece

    def byte(self, c: int) -> None:
        """Append one ASCII character (punctuation)."""
        if not 0 <= c < 128:
            raise ValueError(f"not an ASCII character: {c}")
        self._buf.append(c)

    def null(self) -> None:
        self._buf += b"null"

    def integer(self, v: int) -> None:
        if not -_LLONG <= v < _LLONG:  # the compiled writer takes a C long long
            raise OverflowError("Python int too large to convert to C long")
        self._buf += b"%d" % v

    def real(self, x: float) -> None:
        """Append ``x`` exactly: an integer count of millionths with a decimal point when that
        reads back as ``x`` (see the compiled module), else as msgspec prints it."""
        x = float(x)  # as the compiled writer takes it: a C double
        y = x * 1e6
        if -_EXACT < y < _EXACT and not (x == 0.0 and math.copysign(1.0, x) < 0):
            v = int(y + 0.5) if y >= 0 else int(y - 0.5)
            if v / 1e6 == x:
                sign = "-" if v < 0 else ""
                whole, frac = divmod(abs(v), 1_000_000)
                digits = f"{frac:06d}".rstrip("0") or "0"
                self._buf += f"{sign}{whole}.{digits}".encode()
                return
        self._buf += _encode(x)

    def text(self, s: str) -> None:
        """Append ``s`` as a JSON string."""
        if not isinstance(s, str):
            raise TypeError(f"expected str, got {type(s).__name__}")
        self._buf += _encode(s)

    def value(self, o: Any) -> None:
        """Append ``o`` encoded by msgspec (any value it can encode)."""
        self._buf += _encode(o)

    def close(self, bracket: int) -> None:
        """End an array or object whose every member is followed by a comma: the last comma
        becomes ``bracket`` (appended if there is no member)."""
        if not 0 <= bracket < 128:
            raise ValueError(f"not an ASCII character: {bracket}")
        buf = self._buf
        if buf and buf[-1] == 0x2C:
            buf[-1] = bracket
        else:
            buf.append(bracket)

    def truncate(self, size: int) -> None:
        """Drop what was written after ``size`` bytes (a record that failed half-way)."""
        if 0 <= size < len(self._buf):
            del self._buf[size:]

    def take(self) -> str:
        """What was written, as text; the writer starts empty again."""
        out = self._buf.decode()
        self._buf = bytearray()
        return out
