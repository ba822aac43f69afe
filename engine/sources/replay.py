"""Replay of a recorded tick file (CSV or JSON lines), paced by the file's own timestamps.

The file is streamed in fixed-size chunks read off the event loop, so neither a huge file nor a
huge line costs more than about ``max_line_bytes`` + one chunk of memory. A bad row is rejected
with the same reasons live intake uses, counted, logged under a rate limit, and skipped: the rows
around it are still delivered.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import math
import os
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import aclosing
from itertools import chain
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

from engine.core.errors import EventError, TickflowError
from engine.core.events import DATA_READY, DataReady, Event

from ..intake import DEFAULT_MAX_LINE_BYTES, EventDecoder, RejectLog
from .base import SourceState, SourceStats, Submit
from .fastcsv import plain_block_decoder, plain_row_decoder
from .pacing import Pacer, Sleep

__all__ = ["ReplayFileError", "ReplayFormat", "ReplaySource", "detect_format"]

ReplayFormat = Literal["csv", "jsonl"]

_EXTENSIONS: Final[dict[str, ReplayFormat]] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_CSV_REQUIRED: Final = ("symbol", "ts", "price")
_CSV_FLOATS: Final = frozenset({"ts", "price", "volume", "bid", "ask"})
_CSV_COLUMNS: Final = frozenset({"type", "priority", *_CSV_REQUIRED, *_CSV_FLOATS})
_CHUNK_BYTES: Final = 1 << 16
# A wait for the next tick longer than this (a gap in the recording: a night, a halt) is logged,
# so a paced replay that seems stuck says why.
GAP_NOTICE_S: Final = 5.0

log = logging.getLogger("tickflow.replay")


class ReplayFileError(TickflowError, ValueError):
    """The file as a whole cannot be replayed (unknown format, unusable CSV header)."""


def detect_format(path: str | os.PathLike[str]) -> ReplayFormat:
    """The replay format implied by ``path``'s extension."""
    suffix = Path(path).suffix.lower()
    try:
        return _EXTENSIONS[suffix]
    except KeyError:
        known = ", ".join(sorted(_EXTENSIONS))
        raise ReplayFileError(
            f"{os.fspath(path)}: cannot tell the format from {suffix or 'no extension'!r} "
            f"(known: {known}); name the format: `--format csv` or `--format jsonl` "
            "(format= in code)"
        ) from None


class _Line(NamedTuple):
    number: int  # 1-based physical line number
    data: bytes | None  # without terminator; None when the line was over the limit
    size: int  # length without terminator, also of a line that was not kept


class _LineSplitter:
    """Splits a byte stream fed in arbitrary chunks into lines of at most ``limit`` bytes.

    A longer line is measured but not kept: past the limit its bytes are only counted, so one
    runaway line cannot grow the buffer.
    """

    __slots__ = ("_carry", "_cr", "_dropped", "_limit", "_number")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._number = 0
        self._carry = b""  # the current line so far, while it is within the limit
        self._dropped = 0  # bytes of the current line counted instead of kept (> 0: over limit)
        self._cr = False  # whether the last counted byte was '\r'

    def feed(self, chunk: bytes) -> list[_Line]:
        *complete, tail = chunk.split(b"\n")
        lines = []
        for part in complete:
            self._absorb(part)
            lines.append(self._finish())
        self._absorb(tail)
        return lines

    def close(self) -> list[_Line]:
        """The last line, if the stream does not end with a newline."""
        return [self._finish()] if self._carry or self._dropped else []

    def _absorb(self, piece: bytes) -> None:
        if self._dropped:
            self._dropped += len(piece)
            if piece:
                self._cr = piece.endswith(b"\r")
            return
        self._carry += piece
        if len(self._carry) > self._limit + 1:  # + 1: a '\r' before the '\n' is no content
            self._dropped = len(self._carry)
            self._cr = self._carry.endswith(b"\r")
            self._carry = b""

    def _finish(self) -> _Line:
        self._number += 1
        if self._dropped:
            line = _Line(self._number, None, self._dropped - self._cr)
        else:
            data = self._carry[:-1] if self._carry.endswith(b"\r") else self._carry
            line = _Line(self._number, data if len(data) <= self._limit else None, len(data))
        self._carry = b""
        self._dropped = 0
        return line


async def _read_lines(
    path: Path, limit: int, chunk_bytes: int = _CHUNK_BYTES
) -> AsyncGenerator[_Line, None]:
    """The lines of ``path``, read a chunk at a time in a worker thread."""
    splitter = _LineSplitter(limit)
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, chunk_bytes):
            for line in splitter.feed(chunk):
                yield line
        for line in splitter.close():
            yield line


class _CsvHeader(NamedTuple):
    width: int  # cells in the header: a row with more is misaligned
    columns: tuple[tuple[int, str], ...]  # (cell index, column) of the columns replay reads


def _cell_number(text: str) -> float | str:
    # An unparseable or non-finite cell is passed on as text so the strict conversion rejects it
    # as a bad field, naming the column, like any other type error.
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


def _cell_int(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


class ReplaySource:
    """Replays ``path``; ``speed`` divides the file's ``ts`` gaps (0: as fast as accepted).

    CSV needs a header with at least ``symbol,ts,price``; ``volume,bid,ask,priority`` and ``type``
    are optional, other columns are ignored, and an empty cell counts as absent. JSON lines are
    event objects whose ``type`` defaults to ``DATA_READY``. Blank lines are skipped. Events
    without a ``ts`` (``HIGH_PRIORITY_ARRIVED``) go out right after the event before them; a ``ts``
    that goes backwards is released at once.
    """

    name: str

    def __init__(
        self,
        path: str | os.PathLike[str],
        speed: float = 1.0,
        format: Literal["auto", "csv", "jsonl"] = "auto",
        *,
        name: str | None = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        reject_log: RejectLog | None = None,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(speed) and speed >= 0):
            raise ValueError("speed must be finite and >= 0")
        self._path = Path(path)
        if format == "auto":
            self._format = detect_format(self._path)
        elif format in ("csv", "jsonl"):
            self._format = format
        else:
            raise ValueError(f"format must be 'auto', 'csv' or 'jsonl', got {format!r}")
        self.name = name if name is not None else f"replay:{self._path.name}"
        self._speed = speed
        self._decoder = EventDecoder(max_line_bytes, default_type=DATA_READY)
        self._reject_log = reject_log if reject_log is not None else RejectLog()
        self._sleep = sleep
        self._monotonic = monotonic
        self._state: SourceState = "idle"
        self._emitted = 0
        self._position = 0
        self._held = 0  # 1 while a read event waits for its time

    @property
    def path(self) -> Path:
        return self._path

    @property
    def format(self) -> ReplayFormat:
        return self._format

    @property
    def position(self) -> int:
        """Records (lines after any CSV header) done so far: progress against count_lines().

        A record read but still held back by the pacing is not done: over a gap in the
        recording, progress must not show 100 % while the last tick waits for its time.
        """
        return self._position - self._held

    def count_lines(self) -> int:
        """Records in the file: its lines, blank ones included, less a CSV header (a fast scan)."""
        lines = 0
        last = b"\n"
        with self._path.open("rb") as f:
            while chunk := f.read(1 << 20):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
        if last != b"\n":
            lines += 1  # a last line without a terminator
        if self._format == "csv" and lines:
            lines -= 1
        return lines

    async def run(self, submit: Submit) -> None:
        """Replay the whole file into ``submit``; bad rows are skipped, never fatal."""
        if self._state == "running":
            raise RuntimeError(f"source {self.name!r} is already running")
        self._state = "running"
        self._position = 0
        pacer = Pacer(sleep=self._sleep, monotonic=self._monotonic)
        first_ts: float | None = None
        offset = 0.0
        try:
            async with aclosing(self._events()) as events:
                async for event in events:
                    if self._speed > 0 and type(event) is DataReady:
                        if first_ts is None:
                            first_ts = event.ts
                        previous, offset = offset, (event.ts - first_ts) / self._speed
                        if offset - previous > GAP_NOTICE_S:
                            gap = offset - previous
                            log.info(
                                "replay: the next tick is %.0f s later at this speed "
                                "(a gap in the recording); waiting", gap,
                                extra={"wait_s": gap, "ts": event.ts, "speed": self._speed},
                            )
                    self._held = 1
                    await pacer.wait_until(offset)
                    self._held = 0
                    await submit(event)
                    self._emitted += 1
            self._state = "finished"
        except asyncio.CancelledError:
            self._state = "cancelled"
            raise
        finally:
            if self._state == "running":
                self._state = "failed"
            self._reject_log.flush()

    def statistics(self) -> SourceStats:
        return SourceStats(
            name=self.name,
            state=self._state,
            emitted=self._emitted,
            rejected=self._decoder.statistics().rejected,
        )

    async def _events(self) -> AsyncGenerator[Event, None]:
        header: _CsvHeader | None = None
        async with aclosing(_read_lines(self._path, self._decoder.max_line_bytes)) as lines:
            async for line in lines:
                if self._format == "csv" and header is None:
                    if line.data is None or line.data.strip():
                        header = self._csv_header(line)
                    continue
                event = self._decode_line(line, header)
                if event is not None:
                    yield event

    def iter_events(self) -> Iterator[Event]:
        """The file's events, read and decoded in the caller's thread, without the event loop:
        a backtest's virtual time must not pass while it waits for the file. Bad rows are
        rejected, counted and skipped as in :meth:`run`; ``position`` advances the same way.

        Lines are split a megabyte at a time (as :class:`_LineSplitter` would: a line over the
        limit is measured, never kept) and plain CSV rows take a fast path
        (engine/sources/fastcsv.py) with the strict decoder behind it."""
        # Flattened in C: no Python frame per event between the decoder and the caller.
        return chain.from_iterable(self._batches())

    def _batches(self) -> Iterator[list[Event]]:
        """The events of each megabyte of the file, in order."""
        limit = self._decoder.max_line_bytes
        header: _CsvHeader | None = None
        needs_header = self._format == "csv"
        fast: Callable[[bytes], DataReady | None] | None = None
        block: Callable[[list[bytes]], list[DataReady] | None] | None = None
        self._position = 0
        number = 0
        carry = b""
        over = 0  # bytes counted (not kept) of a line already past the limit
        with self._path.open("rb") as f:
            while True:
                chunk = f.read(_CHUNK_BYTES << 4)
                if chunk:
                    pieces = (carry + chunk).split(b"\n")
                    carry = pieces.pop()
                else:  # the last line, when the file does not end with a newline
                    pieces = [carry] if carry or over else []
                start = 0
                while needs_header and start < len(pieces):
                    # The header: the first line with content (an empty one is skipped).
                    piece = pieces[start].removesuffix(b"\r")
                    start += 1
                    number += 1
                    too_long = over or len(piece) > limit
                    line = _Line(number, None if too_long else piece, over + len(piece))
                    over = 0
                    if line.data is None or line.data.strip():
                        header = self._csv_header(line)
                        fast = plain_row_decoder(header.columns, header.width)
                        block = plain_block_decoder(header.columns, header.width)
                        needs_header = False
                rows = pieces[start:] if start else pieces
                if (
                    block is not None and rows and not over
                    and max(map(len, rows)) <= limit and b"\r" not in chunk
                ):
                    events = block(rows)
                    if events is not None:
                        number += len(rows)
                        self._position += len(rows)
                        self._emitted += len(events)
                        yield events  # type: ignore[misc]
                        rows = []
                out: list[Event] = []
                for piece in rows:
                    number += 1
                    if piece.endswith(b"\r"):
                        piece = piece[:-1]
                    if over or len(piece) > limit:
                        line = _Line(number, None, over + len(piece))
                        over = 0
                    else:
                        if fast is not None:
                            event: Event | None = fast(piece)
                            if event is not None:
                                self._position += 1
                                self._emitted += 1
                                out.append(event)
                                continue
                        line = _Line(number, piece, len(piece))
                    event = self._decode_line(line, header)
                    if event is not None:
                        self._emitted += 1
                        out.append(event)
                if out:
                    yield out
                if not chunk:
                    break
                if over or len(carry) > limit + 1:
                    over += len(carry)
                    carry = b""
        self._reject_log.flush()

    def _decode_line(self, line: _Line, header: _CsvHeader | None) -> Event | None:
        """One record line's event; None for a blank line or a rejected one (counted, logged)."""
        self._position += 1
        try:
            if line.data is None:
                limit = self._decoder.max_line_bytes
                message = f"line of {line.size} bytes exceeds the {limit}-byte limit"
                raise self._decoder.reject("oversized", message)
            if not line.data.strip():
                return None
            if header is not None:
                return self._decode_csv_row(line.data, header)
            return self._decoder.decode(line.data)
        except EventError as exc:
            where = f"{self._path.name}:{line.number}"
            self._reject_log.log(exc, source=where, line=line.data)
            return None

    def _csv_header(self, line: _Line) -> _CsvHeader:
        where = f"{self._path}:{line.number}"
        if line.data is None:
            limit = self._decoder.max_line_bytes
            raise ReplayFileError(f"{where}: CSV header longer than {limit} bytes")
        try:
            text = line.data.decode("utf-8-sig")  # spreadsheet exports often lead with a BOM
        except UnicodeDecodeError:
            raise ReplayFileError(f"{where}: CSV header is not UTF-8") from None
        try:
            names = [cell.strip().lower() for cell in next(csv.reader([text]), [])]
        except csv.Error as exc:
            raise ReplayFileError(f"{where}: unparseable CSV header: {exc}") from None
        missing = [col for col in _CSV_REQUIRED if col not in names]
        if missing:
            raise ReplayFileError(f"{where}: CSV header lacks column(s) {', '.join(missing)}")
        repeated = sorted({col for col in names if col and names.count(col) > 1})
        if repeated:
            raise ReplayFileError(f"{where}: CSV header repeats column(s) {', '.join(repeated)}")
        columns = tuple((i, col) for i, col in enumerate(names) if col in _CSV_COLUMNS)
        return _CsvHeader(len(names), columns)

    def _decode_csv_row(self, data: bytes, header: _CsvHeader) -> Event:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            message = f"invalid UTF-8 at byte {exc.start}"
            raise self._decoder.reject("invalid_utf8", message) from None
        try:
            cells = next(csv.reader([text]), [])
        except csv.Error as exc:
            # The reasons are a fixed metric label set: a row CSV cannot parse is the CSV
            # counterpart of malformed JSON.
            raise self._decoder.reject("malformed_json", f"unparseable CSV row: {exc}") from None
        if len(cells) > header.width:
            message = f"row has {len(cells)} cells, the header {header.width}"
            raise self._decoder.reject("bad_field", message)
        row: dict[str, Any] = {}
        for i, col in header.columns:
            cell = cells[i].strip() if i < len(cells) else ""
            if not cell:
                continue
            if col in _CSV_FLOATS:
                row[col] = _cell_number(cell)
            elif col == "priority":
                row[col] = _cell_int(cell)
            else:
                row[col] = cell
        return self._decoder.decode_object(row)
