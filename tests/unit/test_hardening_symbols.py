"""The symbol alphabet (issue 18, item 11) and the plain messages of item 12: printable ASCII
without spaces, at most 32 characters; anything else is ``bad_field`` on every input path, and
``tickflow status`` never prints a stored name raw."""

from __future__ import annotations

import asyncio
import sqlite3
import textwrap
from pathlib import Path

import orjson
import pytest

from engine.config import loads_config
from engine.core.errors import ConfigError, EventError
from engine.intake import EventDecoder
from engine.storage import open_database
from engine.storage.status import format_report, read_status

# The probe's cases, and their neighbours.
BAD_SYMBOLS = {
    "next_line_u0085": "AA\u0085PL",
    "csi_u009b": "\u009b2J\u009b31m",
    "rtl_override_u202e": "\u202eLPAA",
    "zero_width_space_u200b": "AA\u200bPL",
    "bom": "\ufeffAAPL",
    "lone_space": " ",
    "inner_space": "AA PL",
    "fullwidth": "\uff21\uff21\uff30\uff2c",
    "escape": "\x1b[2J",
    "nul": "AA\x00",
    "del": "AA\x7f",
    "latin1_letter": "\u00c9DF",
    "too_long": "A" * 33,
    "empty": "",
}
GOOD_SYMBOLS = ["AAPL", "BRK.B", "ES=F", "^GSPC", "EUR/USD", "BTC-USD", "A" * 32, "x_1:2"]


def _tick(symbol: str) -> bytes:
    return orjson.dumps({"type": "DATA_READY", "symbol": symbol, "ts": 1, "price": 1})


@pytest.mark.parametrize("name", sorted(BAD_SYMBOLS))
def test_a_symbol_outside_the_alphabet_is_bad_field_on_every_path(name: str) -> None:
    symbol = BAD_SYMBOLS[name]
    decoder = EventDecoder()
    for attempt in (
        lambda: decoder.decode(_tick(symbol)),
        lambda: decoder.decode_object(orjson.loads(_tick(symbol))),
        lambda: decoder.decode(
            orjson.dumps({"type": "HIGH_PRIORITY_ARRIVED", "symbol": symbol, "priority": 1})
        ),
    ):
        with pytest.raises(EventError) as info:
            attempt()
        assert info.value.reason == "bad_field"
        message = str(info.value)
        assert message.isprintable(), message  # the rejected name is escaped, never raw
    assert decoder.statistics().rejected["bad_field"] == 3


@pytest.mark.parametrize("symbol", GOOD_SYMBOLS)
def test_symbols_inside_the_alphabet_are_accepted(symbol: str) -> None:
    assert EventDecoder().decode(_tick(symbol)).symbol == symbol


def test_the_refusal_names_the_rule() -> None:
    with pytest.raises(EventError, match="printable ASCII characters without spaces"):
        EventDecoder().decode(_tick("AA\u200bPL"))


def test_a_seeded_symbol_outside_the_alphabet_is_a_config_error() -> None:
    text = textwrap.dedent("""
        [[symbols]]
        name = "AA\\u200bPL"
        priority = 0

        [workflows.w]
        priority = 0
        [[workflows.w.steps]]
        name = "a"
        action = "tests.unit.run_actions:quick"
        """)
    with pytest.raises(ConfigError, match="printable ASCII"):
        loads_config(text)


def test_a_priority_too_large_for_an_integer_says_so_not_float() -> None:
    line = b'{"type":"HIGH_PRIORITY_ARRIVED","symbol":"A","priority":18446744073709551616}'
    with pytest.raises(EventError) as info:
        EventDecoder().decode(line)
    assert info.value.reason == "bad_field"
    assert "float" not in str(info.value)
    assert "priority above" in str(info.value)


def test_status_escapes_stored_names_it_cannot_print(tmp_path: Path) -> None:
    """Rows written before the alphabet was enforced (or by hand) are shown escaped."""
    db = tmp_path / "state.db"

    async def create() -> None:
        conn = await open_database(db)
        await conn.close()

    asyncio.run(create())
    conn = sqlite3.connect(db)
    try:
        for name, error in [("\u009b2J\u009b31m", "boom\x1b[31m"), ("AA\u200bPL", None),
                            ("AAPL", None)]:
            conn.execute(
                "INSERT INTO symbols (name, phase, status, priority, last_error, updated_at) "
                "VALUES (?, 'idle', 'failed', 0, ?, 0)", (name, error),
            )
        conn.commit()
    finally:
        conn.close()
    text = format_report(read_status(db))
    for line in text.splitlines():
        assert line.isprintable(), repr(line)
    assert "'\\x9b2J\\x9b31m'" in text
    assert "'AA\\u200bPL'" in text
    assert "  AAPL " in text  # printable names are shown as they are


def test_an_integral_float_priority_in_range_keeps_its_type_error() -> None:
    with pytest.raises(EventError, match="got `float`"):
        EventDecoder().decode(b'{"type":"HIGH_PRIORITY_ARRIVED","symbol":"A","priority":1.0}')


# -- duplicate keys ("Also" of issue 18): refused, never last-wins ---------------------------

DUPLICATES = [
    b'{"type":"TASK_COMPLETED","type":"DATA_READY","symbol":"A","ts":1,"price":1}',
    b'{"type":"DATA_READY","symbol":"A","symbol":"B","ts":1,"price":1}',
    b'{"type":"DATA_READY","symbol":"A","ts":1,"price":1,"price":2,"volume":3,"bid":1,"ask":9}',
    b'{"type":"HIGH_PRIORITY_ARRIVED","symbol":"A","priority":5,"priority":0}',
    b'{"type" : "DATA_READY", "symbol" : "A", "ts" : 1, "price" : 1, "ts" : 2}',
]


@pytest.mark.parametrize("line", DUPLICATES)
def test_an_event_repeating_a_key_is_rejected(line: bytes) -> None:
    decoder = EventDecoder()
    with pytest.raises(EventError, match="duplicate key") as info:
        decoder.decode(line)
    assert info.value.reason == "malformed_json"
    assert decoder.statistics().rejected["malformed_json"] == 1


def test_replay_lines_without_type_are_checked_too() -> None:
    with pytest.raises(EventError, match="duplicate key 'price'"):
        EventDecoder(default_type="DATA_READY").decode(b'{"symbol":"A","ts":1,"price":1,"price":2}')


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"DATA_READY","symbol":"A","ts":1,"price":1,"note":"a:b:c"}',
        b'{"type":"DATA_READY","symbol":"A","ts":1,"price":1,"volume":0.0}',
        b'{"type":"DATA_READY","symbol":"A","ts":1,"price":1,"meta":{"ts":1,"x":{"ts":2}}}',
    ],
    ids=["colons-in-a-string", "explicit-default", "same-name-nested"],
)
def test_lines_the_colon_gate_sends_to_the_exact_check_are_still_accepted(line: bytes) -> None:
    assert EventDecoder().decode(line).symbol == "A"
