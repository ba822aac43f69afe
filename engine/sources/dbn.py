"""Databento DBN files (``.dbn``, ``.dbn.zst``) as ``DATA_READY`` events, for backtests.

Needs the optional ``databento-dbn`` package (``pip install 'tickflow[dbn]'``). Records map as:

========================  ==========================================================  =======
schema (record)           price                                                       bid/ask
========================  ==========================================================  =======
trades (TradeMsg)         the trade price; volume the trade size                      --
mbp-1, tbbo (MBP1Msg)     a trade's price (action ``T``), else the mid of the top     level 0
cmbp-1 (CMBP1Msg)         of book (the record's own price when one side is empty)
bbo-*, cbbo-* (BBOMsg)    the last trade price, else the mid                          level 0
ohlcv-* (OHLCVMsg)        the bar's close; volume the bar's volume; ``ts`` the bar's   --
                          *end* (``ts_event`` + the interval: its close is not known
                          before then, so a backtest never trades on it early)
========================  ==========================================================  =======

``ts`` is ``ts_recv`` where the record has it (the order DBN files are sorted by), else
``ts_event``. The symbol is the raw symbol the file's metadata (or an in-stream symbol-mapping
record) gives the instrument id; an unmapped id becomes its decimal string. Other record types
(status, definitions, statistics, system messages) carry no price and are skipped, counted in
``skipped``. A record whose values are no valid tick (a zero price, a side of the book priced
at zero) is rejected like a bad line of any other source: counted by reason, logged under a
rate limit, and the records around it are still delivered.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from engine.core.errors import EventError, TickflowError
from engine.core.events import DATA_READY, DataReady, Event

from ..intake import EventDecoder, RejectLog
from .base import SourceState, SourceStats

__all__ = ["DbnError", "DbnFile"]

_CHUNK_BYTES: Final = 1 << 20
# ohlcv-* record types (str of DBN's RType) and their bar length in seconds.
_OHLCV_SECONDS: Final = {
    "ohlcv-1s": 1.0, "ohlcv-1m": 60.0, "ohlcv-1h": 3600.0, "ohlcv-1d": 86400.0,
    "ohlcv-eod": 86400.0,
}


_finite = math.isfinite


class DbnError(TickflowError, ValueError):
    """The file is not DBN, or databento-dbn is not installed."""


def _dbn() -> Any:
    try:
        import databento_dbn
    except ImportError:
        raise DbnError(
            "reading DBN files needs the databento-dbn package: pip install 'tickflow[dbn]'"
        ) from None
    return databento_dbn


class DbnFile:
    """Reads a DBN file synchronously, in file order (see the module doc for the mapping)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        reject_log: RejectLog | None = None,
    ) -> None:
        self._dbn = _dbn()
        self._path = Path(path)
        self.name = name if name is not None else f"dbn:{self._path.name}"
        self._zstd = self._path.name.lower().endswith(".zst")
        self._decoder = EventDecoder(default_type=DATA_READY)
        self._reject_log = reject_log if reject_log is not None else RejectLog()
        self._symbols: dict[int, str] = {}
        self._kinds: dict[type, str] = {}
        self._state: SourceState = "idle"
        self._emitted = 0
        self._position = 0
        self.skipped = 0
        self.metadata: Any = None

    @property
    def path(self) -> Path:
        return self._path

    @property
    def position(self) -> int:
        """Records read so far (metadata not counted)."""
        return self._position

    def count_lines(self) -> int:
        """Records in the file when that is cheap to tell (uncompressed): else 0, unknown."""
        return 0

    def statistics(self) -> SourceStats:
        return SourceStats(
            name=self.name,
            state=self._state,
            emitted=self._emitted,
            rejected=self._decoder.statistics().rejected,
        )

    def iter_events(self) -> Iterator[Event]:
        dbn = self._dbn
        compression = dbn.Compression.ZSTD if self._zstd else dbn.Compression.NONE
        decoder = dbn.DBNDecoder(compression=compression)
        self._state = "running"
        try:
            with self._path.open("rb") as f:
                while chunk := f.read(_CHUNK_BYTES):
                    try:
                        records = decoder.write_and_decode(chunk)
                    except dbn.DBNError as exc:
                        raise DbnError(f"{self._path}: not a readable DBN file: {exc}") from None
                    for record in records:
                        event = self._event(record)
                        if event is not None:
                            self._emitted += 1
                            yield event
            if decoder.buffer():
                raise DbnError(f"{self._path}: ends inside a record (truncated file?)")
            if self.metadata is None:
                raise DbnError(f"{self._path}: empty, or no DBN metadata at its start")
            self._state = "finished"
        finally:
            if self._state == "running":
                self._state = "failed"
            self._reject_log.flush()

    def _event(self, record: Any) -> Event | None:
        kind = self._kinds.get(type(record))
        if kind is None:
            kind = self._kinds[type(record)] = _kind(record, self._dbn)
        if kind == "metadata":
            self.metadata = record
            self._map_metadata(record)
            return None
        self._position += 1
        if kind == "mapping":
            self._symbols[record.instrument_id] = record.stype_in_symbol or record.stype_out_symbol
            return None
        if kind == "skip":
            self.skipped += 1
            return None
        row = self._row(record, kind)
        if row is None:
            self.skipped += 1
            return None
        event = _plain(row)
        if event is not None:
            return event
        try:
            return self._decoder.decode_object(row)
        except EventError as exc:
            self._reject_log.log(exc, source=f"{self._path.name}:record {self._position}")
            return None

    def _map_metadata(self, metadata: Any) -> None:
        # Historical files map each raw symbol to the instrument ids it had over date intervals;
        # a backtest file spans a few days, so the last interval's id wins.
        for raw, intervals in (metadata.mappings or {}).items():
            for interval in intervals:
                try:
                    self._symbols[int(interval["symbol"])] = raw
                except (KeyError, TypeError, ValueError):
                    continue

    def _row(self, record: Any, kind: str) -> dict[str, Any] | None:
        undef = self._dbn.UNDEF_PRICE
        iid = record.instrument_id
        row: dict[str, Any] = {"symbol": self._symbols.get(iid) or str(iid)}
        if kind == "ohlcv":
            bar = _OHLCV_SECONDS.get(str(record.rtype), 0.0)
            row["ts"] = record.ts_event / 1e9 + bar
            row["price"] = _px(record.close, undef)
            row["volume"] = float(record.volume)
            return row
        row["ts"] = (record.ts_recv if kind != "trade_no_recv" else record.ts_event) / 1e9
        price = _px(record.price, undef)
        bid = ask = None
        top: Any = None
        if kind in ("book", "bbo"):
            top = record.levels[0]
            bid, ask = _px(top.bid_px, undef), _px(top.ask_px, undef)
            if bid is not None:
                row["bid"] = bid
            if ask is not None:
                row["ask"] = ask
        if kind == "bbo":
            trade = price is not None
        elif kind == "book":
            trade = str(record.action) == "T"
        else:
            trade = True
        if not trade and bid is not None and ask is not None:
            # In fixed point, then one division: the mid of 49.9 and 50.3 is 50.1, not 50.09...
            price = (top.bid_px + top.ask_px) / 2e9
        if price is None:
            return None  # a book with no price on it yet: nothing to trade on
        row["price"] = price
        if trade:
            row["volume"] = float(record.size)
        return row


def _kind(record: Any, dbn: Any) -> str:
    """How a record type maps (decided once per type)."""
    if isinstance(record, dbn.Metadata):
        return "metadata"
    name = type(record).__name__
    if name.startswith("SymbolMappingMsg"):
        return "mapping"
    if name.startswith("OHLCVMsg"):
        return "ohlcv"
    if name.startswith(("BBOMsg", "CBBOMsg")):
        return "bbo"
    if name.startswith(("MBP1Msg", "CMBP1Msg")):
        return "book"
    if name.startswith("TradeMsg"):
        return "trade" if hasattr(record, "ts_recv") else "trade_no_recv"
    return "skip"  # status, definition, statistics, imbalance, MBO, MBP-10, system, error


_SYMBOL_OK: dict[str, bool] = {}


def _plain(row: dict[str, Any]) -> DataReady | None:
    """The row as an event when it plainly passes the decoder's rules (else None: the strict
    decoder then accepts or rejects it with its reason)."""
    symbol = row["symbol"]
    ok = _SYMBOL_OK.get(symbol)
    if ok is None:
        ok = _SYMBOL_OK[symbol] = (
            0 < len(symbol) <= 32 and symbol.isascii() and symbol.isprintable()
        ) if len(_SYMBOL_OK) < 100_000 else False
    ts, price = row["ts"], row["price"]
    bid, ask = row.get("bid"), row.get("ask")
    volume = row.get("volume", 0.0)
    if not (ok and _finite(ts) and ts >= 0.0 and _finite(price) and price > 0.0
            and _finite(volume) and volume >= 0.0):
        return None
    if bid is not None and not (_finite(bid) and bid > 0.0):
        return None
    if ask is not None and not (_finite(ask) and ask > 0.0):
        return None
    if bid is not None and ask is not None and bid > ask:
        return None
    return DataReady(symbol, ts, price, volume, bid, ask)


def _px(value: int, undef: int) -> float | None:
    # Division, not a multiply by 1e-9: it is correctly rounded, so 100.6 stays 100.6.
    return None if value == undef else value / 1e9
