"""The pure part of the network intake: :class:`engine.service.netintake.LineSplitter`, and
the token.

The splitter sees attacker-controlled bytes cut at arbitrary points by TCP, so the properties are
checked against a simple model over arbitrary streams and arbitrary chunkings: it never raises,
yields the same items whatever the chunking, never holds more than one line, and reports each
oversized line exactly once, in stream order.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import IntakeSettings
from engine.service.netlines import TOKEN_ENV, IntakeError, LineSplitter, Oversized, load_token

LIMIT = 16


def _too_long(line: bytes, limit: int) -> bool:
    size = len(line) - (1 if line.endswith(b"\r") else 0)
    return size > limit


def _model(stream: bytes, limit: int) -> tuple[list[bytes | str], bytes | None]:
    """Complete lines (an oversized one as the marker "X") and the unfinished tail.

    A tail longer than the limit (+1 for a possible "\\r") is already known to be oversized."""
    *lines, tail = stream.split(b"\n")
    out: list[bytes | str] = ["X" if _too_long(line, limit) else line for line in lines]
    if len(tail) > limit + 1:
        out.append("X")
        return out, None
    return out, tail or None


def _run(chunks: list[bytes], limit: int) -> tuple[list[bytes | str], bytes | None]:
    splitter = LineSplitter(limit)
    out: list[bytes | str] = []
    for chunk in chunks:
        for item in splitter.feed(chunk):
            out.append("X" if isinstance(item, Oversized) else item)
        assert splitter.buffered <= limit + 1  # never more than one (partial) line held
    return out, splitter.finish()


def _chunk(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    bounds = [0, *points, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


stream_bytes = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"\n", b"\r\n", b"\r", b'{"type":"DATA_READY"}', b"x" * 17]),
    ),
    max_size=20,
).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(stream=stream_bytes, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30),
       limit=st.integers(min_value=1, max_value=LIMIT))
def test_any_chunking_gives_the_model_answer(stream: bytes, cuts: list[int], limit: int) -> None:
    expected_lines, expected_tail = _model(stream, limit)
    lines, tail = _run(_chunk(stream, cuts), limit)
    assert tail == expected_tail
    # A line that crossed the limit before its newline arrived is reported as soon as that is
    # known; a line reported while still incomplete can't also be the tail.
    assert lines == expected_lines


def test_oversized_line_is_reported_before_its_newline_then_skipped() -> None:
    splitter = LineSplitter(8)
    assert splitter.feed(b'{"a":1}\n') == [b'{"a":1}']
    items = splitter.feed(b"y" * 100)
    assert items == [Oversized(100)]
    assert splitter.feed(b"y" * 1000) == []  # still discarding: nothing held
    assert splitter.buffered == 0
    assert splitter.feed(b"yy\nok\n") == [b"ok"]
    assert splitter.finish() is None


def test_crlf_terminator_is_not_counted_against_the_limit() -> None:
    splitter = LineSplitter(4)
    assert splitter.feed(b"abcd\r") == []  # might be "abcd" + "\r\n"
    assert splitter.feed(b"\nabcde\r\n") == [b"abcd\r", Oversized(6)]


def test_half_line_at_end_of_stream() -> None:
    splitter = LineSplitter(64)
    assert splitter.feed(b'{"type":"DATA_RE') == []
    assert splitter.finish() == b'{"type":"DATA_RE'
    assert splitter.finish() is None


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_line_bytes"):
        LineSplitter(0)


# -- the token -------------------------------------------------------------------------------


def test_token_from_file_wins_over_environment(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("s3cret\n")
    settings_ = IntakeSettings(token_file=str(f))
    assert load_token(settings_, {TOKEN_ENV: "other"}) == "s3cret"


def test_token_from_environment_or_none() -> None:
    assert load_token(IntakeSettings(), {TOKEN_ENV: " abc "}) == "abc"
    assert load_token(IntakeSettings(), {}) is None


@pytest.mark.parametrize("content", ["", "  \n"])
def test_empty_token_fails_closed(tmp_path: Path, content: str) -> None:
    f = tmp_path / "token"
    f.write_text(content)
    with pytest.raises(IntakeError, match="empty"):
        load_token(IntakeSettings(token_file=str(f)), {})
    with pytest.raises(IntakeError, match="empty"):
        load_token(IntakeSettings(), {TOKEN_ENV: content})


def test_missing_token_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(IntakeError, match="cannot read"):
        load_token(IntakeSettings(token_file=str(tmp_path / "nope")), {})


def test_intake_is_off_by_default() -> None:
    assert not IntakeSettings().enabled
    assert IntakeSettings(tcp_port=0).enabled
    assert IntakeSettings(unix_path="/tmp/x.sock").enabled
