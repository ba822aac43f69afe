"""OHLCV bars kept up to date tick by tick: the incremental form of ``bars_by_time`` and
``bars_by_count`` (:mod:`strategies.indicators`).

After ticks ``t1 .. tn`` have been folded in, in any number of :meth:`BarSeries.fold` calls,
:meth:`BarSeries.bars` equals ``bars_by_time(t1 .. tn, seconds)[-max_bars:]`` (or
``bars_by_count(t1 .. tn, per_bar)[-max_bars:]``) -- the property test in
tests/unit/test_bars.py holds it to that. A fold costs the number of new ticks, not the
length of the history.

Time bars follow ``bars_by_time``'s ordering exactly: open and close are the first and last tick
*in time* (ties: in arrival order), so a tick that arrives late is placed as a sort would place
it: a late tick for a bucket that already closed updates that bar (or inserts one where a quiet
bucket had none; a consumer carrying values over the closed bars must compare them, as
``calculate_trend`` does), and one older than every bar kept is outside the bars and ignored,
as the slice ``[-max_bars:]`` would drop it. The one difference: a bar's volume is summed in
arrival order, so with out-of-order ticks it may differ from the sorted sum in the last bit
(never with whole-number volumes).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from engine.core.strategy import Tick

from .indicators import Bar, IndicatorError

__all__ = ["BarSeries"]


class BarSeries:
    """Bars of every tick folded in since the last :meth:`reset`, the newest ``max_bars`` kept.

    Exactly one of ``seconds`` (time bars over aligned buckets) and ``per_bar`` (bars of that
    many ticks in arrival order) is given. The last bar is the one still forming.
    """

    __slots__ = (
        "_bars",
        "_closed",
        "_forming",
        "_times",
        "as_of",
        "max_bars",
        "per_bar",
        "seconds",
    )

    def __init__(
        self, *, seconds: float | None = None, per_bar: int | None = None, max_bars: int = 128
    ) -> None:
        if (seconds is None) == (per_bar is None):
            raise IndicatorError("give exactly one of seconds and per_bar")
        if seconds is not None and not (seconds > 0.0 and math.isfinite(seconds)):
            raise IndicatorError(f"bar size must be a positive number of seconds, got {seconds}")
        if per_bar is not None and per_bar < 1:
            raise IndicatorError(f"ticks per bar must be >= 1, got {per_bar}")
        if max_bars < 1:
            raise IndicatorError(f"max_bars must be >= 1, got {max_bars}")
        self.seconds = seconds
        self.per_bar = per_bar
        self.max_bars = max_bars
        # Closed bars, and beside each its open and close tick times (time bars: a late tick
        # must know whether it comes before the open or after the close).
        self._closed: deque[Bar] = deque(maxlen=max_bars - 1)
        self._times: deque[tuple[float, float]] = deque(maxlen=max_bars - 1)
        # The forming bar as a list: [key, open, high, low, close, volume, ticks, open_ts,
        # close_ts] (key: the bucket for time bars, unused for count bars).
        self._forming: list[float] | None = None
        self._bars: tuple[Bar, ...] | None = ()
        self.as_of = -math.inf

    def reset(self) -> None:
        self._closed.clear()
        self._times.clear()
        self._forming = None
        self._bars = ()
        self.as_of = -math.inf

    def fold(self, ticks: Sequence[Tick]) -> None:
        """Add ``ticks`` (in arrival order) to the bars."""
        if not ticks:
            return
        self._bars = None
        if self.per_bar is not None:
            self._fold_count(ticks, self.per_bar)
        else:
            assert self.seconds is not None
            self._fold_time(ticks, self.seconds)

    def bars(self) -> tuple[Bar, ...]:
        """The kept bars, oldest first; the last one may still be forming."""
        bars = self._bars
        if bars is None:
            f = self._forming
            assert f is not None
            if self.per_bar is not None:
                start, end = f[7], f[8]
            else:
                assert self.seconds is not None
                start, end = f[0] * self.seconds, (f[0] + 1) * self.seconds
            last = Bar(start, end, f[1], f[2], f[3], f[4], f[5], int(f[6]))
            bars = self._bars = (*self._closed, last)
        return bars

    def _close(self, bar: Bar, times: tuple[float, float]) -> None:
        self._closed.append(bar)  # the deque's maxlen drops the oldest: like [-max_bars:]
        self._times.append(times)

    def _fold_count(self, ticks: Sequence[Tick], n: int) -> None:
        f = self._forming
        as_of = self.as_of
        for t in ticks:
            p, ts = t.price, t.ts
            if ts > as_of:
                as_of = ts
            if f is None or f[6] >= n:
                if f is not None:
                    self._close(Bar(f[7], f[8], f[1], f[2], f[3], f[4], f[5], int(f[6])),
                                (f[7], f[8]))
                f = [0.0, p, p, p, p, t.volume, 1, ts, ts]
                continue
            if p > f[2]:
                f[2] = p
            elif p < f[3]:
                f[3] = p
            f[4] = p
            f[5] += t.volume
            f[6] += 1
            f[8] = ts
        self._forming = f
        self.as_of = as_of

    def _fold_time(self, ticks: Sequence[Tick], seconds: float) -> None:
        floor = math.floor
        f = self._forming
        as_of = self.as_of
        for t in ticks:
            p, ts = t.price, t.ts
            if ts > as_of:
                as_of = ts
            k = floor(ts / seconds)
            if f is None or k > f[0]:
                if f is not None:
                    key = f[0]
                    self._close(
                        Bar(key * seconds, (key + 1) * seconds, f[1], f[2], f[3], f[4], f[5],
                            int(f[6])),
                        (f[7], f[8]),
                    )
                f = [k, p, p, p, p, t.volume, 1, ts, ts]
                continue
            if k < f[0]:
                self._late(t, k, seconds)
                continue
            if ts < f[7]:  # earlier than the open: it is the open (stable: ties stay later)
                f[1], f[7] = p, ts
            if ts >= f[8]:
                f[4], f[8] = p, ts
            if p > f[2]:
                f[2] = p
            elif p < f[3]:
                f[3] = p
            f[5] += t.volume
            f[6] += 1
        self._forming = f
        self.as_of = as_of

    def _late(self, t: Tick, k: int, seconds: float) -> None:
        """A tick for bucket ``k``, older than the forming bar's: update or insert its bar."""
        closed, times = self._closed, self._times
        start = k * seconds
        i = len(closed) - 1
        while i >= 0 and closed[i].start > start:
            i -= 1
        p, ts = t.price, t.ts
        if i >= 0 and closed[i].start == start:
            b = closed[i]
            open_ts, close_ts = times[i]
            o, c = b.open, b.close
            if ts < open_ts:
                o, open_ts = p, ts
            if ts >= close_ts:
                c, close_ts = p, ts
            closed[i] = Bar(b.start, b.end, o, max(b.high, p), min(b.low, p), c,
                            b.volume + t.volume, b.ticks + 1)
            times[i] = (open_ts, close_ts)
            return
        # No bar for that bucket yet: a new one goes after position i.
        at = i + 1
        if len(closed) == closed.maxlen:
            if at == 0:
                return  # older than every kept bar: [-max_bars:] would not keep it either
            closed.popleft()
            times.popleft()
            at -= 1
        closed.insert(at, Bar(start, (k + 1) * seconds, p, p, p, p, t.volume, 1))
        times.insert(at, (ts, ts))
