"""Databento DBN input: fixtures made with databento-dbn's own encoder, every mapped schema."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.core.events import DataReady
from engine.sources.dbn import DbnError, DbnFile

dbn = pytest.importorskip("databento_dbn")

T0 = 1_700_000_000_000_000_000  # ns
PX = 1_000_000_000  # DBN's fixed-point price scale


def _metadata(schema: Any, symbols: dict[str, int]) -> Any:
    mappings = [
        SimpleNamespace(
            raw_symbol=raw,
            intervals=[SimpleNamespace(start_date=dt.date(2023, 11, 14),
                                       end_date=dt.date(2023, 11, 15), symbol=str(iid))],
        )
        for raw, iid in symbols.items()
    ]
    return dbn.Metadata(
        dataset="XNAS.ITCH", start=T0, stype_in=dbn.SType.RAW_SYMBOL,
        stype_out=dbn.SType.INSTRUMENT_ID, schema=schema, symbols=list(symbols),
        mappings=mappings,
    )


def _write(path: Path, metadata: Any, records: list[Any], *, zstd: bool = False) -> Path:
    blob = bytes(metadata) + b"".join(bytes(r) for r in records)
    if zstd:
        with path.open("wb") as out:
            transcoder = dbn.Transcoder(out, dbn.Encoding.DBN, dbn.Compression.ZSTD)
            transcoder.write(blob)
            transcoder.flush()
    else:
        path.write_bytes(blob)
    return path


def _book(bid: float, ask: float) -> Any:
    return dbn.BidAskPair(bid_px=round(bid * PX), ask_px=round(ask * PX), bid_sz=5, ask_sz=7)


def _mbp1(iid: int, t_ns: int, price: float, action: Any, bid: float, ask: float) -> Any:
    return dbn.MBP1Msg(
        publisher_id=1, instrument_id=iid, ts_event=T0 + t_ns - 10, price=round(price * PX),
        size=3, action=action, side=dbn.Side.BID, depth=0, ts_recv=T0 + t_ns,
        levels=_book(bid, ask),
    )


def test_trades_and_mbp1_map_with_bid_ask(tmp_path: Path) -> None:
    records = [
        dbn.TradeMsg(publisher_id=1, instrument_id=7, ts_event=T0, price=101 * PX, size=4,
                     action=dbn.Action.TRADE, side=dbn.Side.ASK, depth=0, ts_recv=T0 + 1000),
        _mbp1(7, 2_000_000, 100.5, dbn.Action.TRADE, 100.4, 100.6),
        _mbp1(8, 3_000_000, 50.0, dbn.Action.ADD, 49.9, 50.3),  # a quote: the mid
    ]
    for zstd in (False, True):
        name = "ticks.dbn.zst" if zstd else "ticks.dbn"
        path = _write(tmp_path / name, _metadata(dbn.Schema.MBP_1, {"AAPL": 7, "MSFT": 8}),
                      records, zstd=zstd)
        source = DbnFile(path)
        events = list(source.iter_events())
        assert events == [
            DataReady("AAPL", (T0 + 1000) / 1e9, 101.0, 4.0),
            DataReady("AAPL", (T0 + 2_000_000) / 1e9, 100.5, 3.0, 100.4, 100.6),
            DataReady("MSFT", (T0 + 3_000_000) / 1e9, 50.1, 0.0, 49.9, 50.3),
        ]
        assert source.statistics().state == "finished"
        assert source.position == 3


def test_bbo_and_ohlcv(tmp_path: Path) -> None:
    bbo = dbn.BBOMsg(
        rtype=dbn.RType.BBO_1S, publisher_id=1, instrument_id=7, ts_event=T0,
        price=dbn.UNDEF_PRICE, size=0, side=dbn.Side.NONE, flags=0, ts_recv=T0 + 5,
        sequence=0, levels=_book(10.0, 10.2),
    )
    bar = dbn.OHLCVMsg(rtype=dbn.RType.OHLCV_1M, publisher_id=1, instrument_id=7, ts_event=T0,
                       open=9 * PX, high=11 * PX, low=8 * PX, close=10 * PX, volume=1234)
    path = _write(tmp_path / "x.dbn", _metadata(dbn.Schema.OHLCV_1M, {"AAPL": 7}), [bbo, bar])
    events = list(DbnFile(path).iter_events())
    # No trade yet in the BBO: the mid. The bar arrives at its end, one minute after its open.
    assert events == [
        DataReady("AAPL", (T0 + 5) / 1e9, 10.1, 0.0, 10.0, 10.2),
        DataReady("AAPL", T0 / 1e9 + 60.0, 10.0, 1234.0),
    ]


def test_bad_records_are_rejected_and_the_rest_delivered(tmp_path: Path) -> None:
    records = [
        dbn.TradeMsg(publisher_id=1, instrument_id=7, ts_event=T0, price=0, size=4,
                     action=dbn.Action.TRADE, side=dbn.Side.ASK, depth=0, ts_recv=T0),
        _mbp1(9, 1_000, 10.0, dbn.Action.TRADE, 10.5, 10.1),  # bid above ask; unmapped id
        _mbp1(7, 2_000, 10.0, dbn.Action.TRADE, 9.9, 10.1),
        dbn.SymbolMappingMsg(
            publisher_id=1, instrument_id=9, ts_event=T0, stype_in=dbn.SType.RAW_SYMBOL,
            stype_in_symbol="NVDA", stype_out=dbn.SType.INSTRUMENT_ID, stype_out_symbol="9",
            start_ts=T0, end_ts=T0 + 10**12,
        ),
        _mbp1(9, 3_000, 12.0, dbn.Action.TRADE, 11.9, 12.1),
    ]
    path = _write(tmp_path / "x.dbn", _metadata(dbn.Schema.MBP_1, {"AAPL": 7}), records)
    source = DbnFile(path)
    events = list(source.iter_events())
    assert [(e.symbol, e.price) for e in events] == [("AAPL", 10.0), ("NVDA", 12.0)]
    rejected = {k: v for k, v in source.statistics().rejected.items() if v}
    assert rejected == {"bad_field": 2}


def test_not_dbn_and_truncated_files_are_clear_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dbn"
    junk.write_bytes(b"symbol,ts,price\nA,1,2\n")
    with pytest.raises(DbnError, match=r"not a readable DBN file|no DBN metadata"):
        list(DbnFile(junk).iter_events())
    good = _write(tmp_path / "t.dbn", _metadata(dbn.Schema.MBP_1, {"AAPL": 7}),
                  [_mbp1(7, 1, 10.0, dbn.Action.TRADE, 9.9, 10.1)])
    cut = tmp_path / "cut.dbn"
    cut.write_bytes(good.read_bytes()[:-5])
    source = DbnFile(cut)
    with pytest.raises(DbnError, match="truncated"):
        list(source.iter_events())
    assert source.statistics().state == "failed"
