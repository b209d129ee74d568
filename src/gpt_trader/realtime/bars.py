"""Live OHLCV bars from trades, in event time, with a watermark.

A window `[start, start + width)` is open from its first trade. When the event-time frontier (the newest trade's
time, or the source's clock estimate while the feed is quiet) passes its end, the bar is emitted `provisional`;
trades up to `lateness` late still amend it (a new provisional revision). When the frontier passes
`end + lateness` it is emitted `final` and later trades for it are refused as late (counted, dead-lettered).
A window with no trades never exists, so no flat bar is ever invented. Windows that overlap a feed gap carry
`gap=True` and are held back from `final` until the gap is backfilled from the historical API (or the backfill
gives up), so a bar is final only when it is complete or says it may not be.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from gpt_trader.core.timeframe import Timeframe
from gpt_trader.core.types import Bar
from gpt_trader.realtime.timestamps import ns_to_datetime

_NS = 1_000_000_000
_SMALL = 8  # below this many trades a plain loop beats numpy's per-call overhead
_NEG_INF = -(2**62)
_AT0 = np.zeros(1, dtype=np.intp)


def volume_sum(sz: Any) -> float:
    """A run of trades' volume as numpy sums it for one segment of `np.add.reduceat` (whose result does not depend
    on where the segment lies), so one batched `reduceat` over many runs gives exactly each run's own sum."""
    return float(np.add.reduceat(sz, _AT0)[0])


def pv_sum(px: Any, sz: Any) -> float:
    """A run of trades' sum of price * size, like `volume_sum`."""
    return float(np.add.reduceat(px * sz, _AT0)[0])


@dataclass(frozen=True, slots=True)
class LiveBar:
    """One emitted bar. `trades == -1` and `vwap` NaN mark a backfilled bar whose history has no such fields."""

    symbol: str
    timeframe: str
    ts_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float
    trades: int
    status: str  # "provisional" | "final"
    # The window may lack trades: it overlaps a feed gap not backfilled, or it is the symbol's first window and the
    # stream joined after it began (its first trade is not at the window's start).
    gap: bool
    backfilled: bool
    revision: int
    source: str
    emitted_ns: int

    @property
    def ts(self) -> datetime:
        """Window open time (UTC)."""
        return ns_to_datetime(self.ts_ns)

    @property
    def final(self) -> bool:
        """True once the bar can no longer change (except by a backfill correction)."""
        return self.status == "final"

    def to_bar(self) -> Bar:
        """As the core `Bar` value type."""
        return Bar(self.ts, self.symbol, self.source, self.open, self.high, self.low, self.close, self.volume)

    def to_fields(self) -> dict[str, str]:
        """Flat string fields for a bus entry."""
        return {
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "ts": str(self.ts_ns),
            "open": repr(self.open),
            "high": repr(self.high),
            "low": repr(self.low),
            "close": repr(self.close),
            "volume": repr(self.volume),
            "vwap": repr(self.vwap),
            "trades": str(self.trades),
            "status": self.status,
            "gap": "1" if self.gap else "0",
            "backfilled": "1" if self.backfilled else "0",
            "revision": str(self.revision),
            "source": self.source,
            "emitted": str(self.emitted_ns),
        }

    @classmethod
    def from_fields(cls, fields: dict[Any, Any]) -> LiveBar:
        """Inverse of `to_fields` (accepts bytes keys/values as Redis returns them)."""
        f = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in fields.items()
        }
        return cls(
            f["symbol"], f["timeframe"], int(f["ts"]), float(f["open"]), float(f["high"]), float(f["low"]),
            float(f["close"]), float(f["volume"]), float(f["vwap"]), int(f["trades"]), f["status"], f["gap"] == "1",
            f["backfilled"] == "1", int(f["revision"]), f["source"], int(f["emitted"]),
        )  # fmt: skip


@dataclass(slots=True)
class _Window:
    start: int
    open: float = 0.0
    open_ts: int = 2**62
    high: float = -math.inf
    low: float = math.inf
    close: float = 0.0
    close_ts: int = _NEG_INF
    volume: float = 0.0
    pv: float = 0.0
    trades: int = 0
    revision: int = -1  # last emitted revision; -1 = never emitted
    dirty: bool = True
    gap: bool = False
    backfilled: bool = False
    source: str = ""


def _vwap(pv: float, volume: float, low: float, high: float) -> float:
    """Sum(price * size) / volume, within [low, high]: the division's rounding alone put it one ulp outside in
    nearly half of constant-price bars."""
    return min(max(pv / volume, low), high)


@dataclass
class Gap:
    """A stretch of event time in which a feed may have missed trades for `symbol`."""

    symbol: str
    start_ns: int
    end_ns: int | None = None  # None while the feed is still down
    pending: bool = True  # waiting for a backfill
    opened_wall_ns: int = 0
    closed_wall_ns: int = 0  # when the feed came back (our clock): the backfill timeout runs from here
    final_before: int = _NEG_INF  # windows starting before this were final when it opened (never re-emitted)
    windows: list[int] = field(default_factory=list)


@dataclass
class AggregatorCounters:
    """Trades aggregated, refused as late, and bars emitted by status."""

    trades: int = 0
    late: int = 0
    provisional: int = 0
    final: int = 0
    backfilled: int = 0
    gap_bars: int = 0


# Terms from which a sum is taken by `np.add.accumulate` instead of a Python loop (numpy's per-call cost pays off).
_ACCUMULATE_MIN = 16


def _added(total: float, terms: Sequence[float] | npt.NDArray[np.float64]) -> float:
    """`total` plus each term in turn, rounded after each addition as a Python loop rounds: an array's terms by
    `np.add.accumulate`, which adds strictly in order (unlike `np.sum`, whose pairwise sum rounds differently)."""
    if isinstance(terms, np.ndarray):
        if len(terms) >= _ACCUMULATE_MIN:
            return float(np.add.accumulate(np.concatenate(([total], terms)))[-1])
        terms = terms.tolist()  # Python floats: the sum stays one
    for x in terms:
        total += x
    return total


class BarAggregator:
    """Event-time OHLCV/VWAP/count bars of one timeframe for many symbols."""

    def __init__(self, timeframe: Timeframe | str, lateness_ns: int = 0, *, source: str = "stream") -> None:
        self.timeframe = Timeframe.parse(timeframe) if isinstance(timeframe, str) else timeframe
        self.width = self.timeframe.seconds * _NS
        self.lateness_ns = int(lateness_ns)
        self.label = str(self.timeframe)
        self.source = source
        self._open: dict[str, dict[int, _Window]] = {}
        self._max_event: dict[str, int] = {}
        self._final_before: dict[str, int] = {}
        self._gaps: dict[str, list[Gap]] = {}
        self.counters = AggregatorCounters()
        self._first_window: dict[str, int] = {}  # the start of each symbol's earliest window

    # --- ingest -------------------------------------------------------------------------------------------------
    def add(self, symbol: str, ts: Any, price: Any, size: Any, source: str = "") -> list[int]:
        """Aggregate trades of one symbol (arrays or lists of equal length); returns indices refused as late."""
        n = len(ts)
        if n == 0:
            return []
        windows = self._open.get(symbol)
        if windows is None:
            windows = self._open[symbol] = {}
        final_before = self._final_before.get(symbol, _NEG_INF)
        width = self.width
        late: list[int] = []
        if n < _SMALL:
            top = self._max_event.get(symbol, _NEG_INF)
            for i in range(n):
                t = int(ts[i])
                start = t - t % width
                win = windows.get(start)
                if win is None:
                    if start < final_before:
                        late.append(i)
                        continue
                    win = windows[start] = _Window(start, source=source)
                p = float(price[i])
                s = float(size[i])
                if t < win.open_ts:
                    win.open_ts, win.open = t, p
                if t >= win.close_ts:
                    win.close_ts, win.close = t, p
                if p > win.high:
                    win.high = p
                if p < win.low:
                    win.low = p
                win.volume += s
                win.pv += p * s
                win.trades += 1
                win.dirty = True
                if t > top:
                    top = t
            self._max_event[symbol] = top
        else:
            ts_a = np.asarray(ts, dtype=np.int64)
            px = np.asarray(price, dtype=np.float64)
            sz = np.asarray(size, dtype=np.float64)
            starts = ts_a - ts_a % width
            lo, hi = int(starts.min()), int(starts.max())
            if lo == hi:
                self._add_window(windows, lo, final_before, ts_a, px, sz, late, None, source)
            else:
                for start in np.unique(starts).tolist():
                    idx = np.flatnonzero(starts == start)
                    self._add_window(windows, start, final_before, ts_a[idx], px[idx], sz[idx], late, idx, source)
            top = int(ts_a.max())
            if top > self._max_event.get(symbol, _NEG_INF):
                self._max_event[symbol] = top
        self.counters.trades += n - len(late)
        self.counters.late += len(late)
        return late

    def add_one(self, symbol: str, t: int, price: float, size: float, source: str = "") -> bool:
        """`add` for a single trade (one per frame on Binance-style feeds); False when it is late."""
        windows = self._open.get(symbol)
        if windows is None:
            windows = self._open[symbol] = {}
        start = t - t % self.width
        win = windows.get(start)
        if win is None:
            if start < self._final_before.get(symbol, _NEG_INF):
                self.counters.late += 1
                return False
            win = windows[start] = _Window(start, source=source)
        if t < win.open_ts:
            win.open_ts, win.open = t, price
        if t >= win.close_ts:
            win.close_ts, win.close = t, price
        if price > win.high:
            win.high = price
        if price < win.low:
            win.low = price
        win.volume += size
        win.pv += price * size
        win.trades += 1
        win.dirty = True
        if t > self._max_event.get(symbol, _NEG_INF):
            self._max_event[symbol] = t
        self.counters.trades += 1
        return True

    def newest(self, symbol: str) -> int:
        """The newest trade time of `symbol` so far, as the frontier counts it (a very early time before any)."""
        return self._max_event.get(symbol, _NEG_INF)

    def hold_newest(self, symbol: str, newest: int) -> None:
        """Set the newest trade time of `symbol` back to `newest` (what `newest` said before trades that must not
        move the frontier were added: a frame stamped ahead of the source's clock); their windows keep them."""
        if newest <= _NEG_INF:
            self._max_event.pop(symbol, None)
        else:
            self._max_event[symbol] = newest

    def window_bounds(self, symbol: str) -> tuple[int, int, bool] | None:
        """`(start, end, open)` of the window holding `symbol`'s newest trade, with `end` cut where the finality
        frontier would move (the newest trade minus the lateness reaching a new window): trades at `start <= t < end`
        added with `add_one` leave `advance` nothing new to emit but their own window (None before any trade).
        `open` says whether that window takes trades (it exists, or is not final yet)."""
        top = self._max_event.get(symbol)
        if top is None:
            return None
        width, lateness = self.width, self.lateness_ns
        start = top - top % width
        end = min(start + width, ((top - lateness) // width + 1) * width + lateness)
        windows = self._open.get(symbol)
        is_open = (windows is not None and start in windows) or start >= self._final_before.get(symbol, _NEG_INF)
        return start, end, is_open

    def add_in_window(
        self, symbol: str, ts: Sequence[int], px: Sequence[float], sz: Sequence[float], source: str
    ) -> None:
        """`add_one` for each trade in turn (same arithmetic, same order), for trades the caller has checked fall in
        the open window `window_bounds` reports."""
        windows = self._open.get(symbol)
        if windows is None:
            windows = self._open[symbol] = {}
        t0 = ts[0]
        start = t0 - t0 % self.width
        win = windows.get(start)
        if win is None:
            win = windows[start] = _Window(start, source=source)
        open_ts, open_, close_ts, close = win.open_ts, win.open, win.close_ts, win.close
        high, low, volume, pv = win.high, win.low, win.volume, win.pv
        top = self._max_event.get(symbol, _NEG_INF)
        for t, price, size in zip(ts, px, sz, strict=True):
            if t < open_ts:
                open_ts, open_ = t, price
            if t >= close_ts:
                close_ts, close = t, price
            if price > high:
                high = price
            if price < low:
                low = price
            volume += size
            pv += price * size
            if t > top:
                top = t
        win.open_ts, win.open, win.close_ts, win.close = open_ts, open_, close_ts, close
        win.high, win.low, win.volume, win.pv = high, low, volume, pv
        n = len(ts)
        win.trades += n
        win.dirty = True
        self._max_event[symbol] = top
        self.counters.trades += n

    def add_run(
        self,
        symbol: str,
        t_first: int,
        p_first: float,
        t_last: int,
        p_last: float,
        high: float,
        low: float,
        volume: float,
        pv: float,
        n: int,
        source: str = "",
    ) -> bool:
        """Aggregate `n` trades of one symbol that all fall in one window of this timeframe, given as a summary.

        Equal to `add` with the trades themselves (numpy path): `t_first`/`p_first` are the earliest trade (first
        of equal times), `t_last`/`p_last` the latest (last of equal times), `pv` their sum of price * size. The
        caller checks that `t_first` and `t_last` fall in one window. Returns False when that window is already
        final: then all `n` trades are late (counted as such) and nothing changes.
        """
        return self.add_terms(symbol, t_first, p_first, t_last, p_last, high, low, (volume,), (pv,), n, source)

    def add_terms(
        self,
        symbol: str,
        t_first: int,
        p_first: float,
        t_last: int,
        p_last: float,
        high: float,
        low: float,
        volumes: Sequence[float] | npt.NDArray[np.float64],
        pvs: Sequence[float] | npt.NDArray[np.float64],
        n: int,
        source: str = "",
    ) -> bool:
        """`add_run` for consecutive runs of `n` trades in one window, given as one summary whose volume and
        price * size are added term by term in order (one term per run that `add_run` would take, one per trade
        that `add` would take one by one), as those calls would add them. False (all late, nothing changed) when
        the window is already final."""
        windows = self._open.get(symbol)
        if windows is None:
            windows = self._open[symbol] = {}
        if t_last > self._max_event.get(symbol, _NEG_INF):
            self._max_event[symbol] = t_last  # late trades move the frontier too, as in `add`
        start = t_first - t_first % self.width
        win = windows.get(start)
        if win is None:
            if start < self._final_before.get(symbol, _NEG_INF):
                self.counters.late += n
                return False
            win = windows[start] = _Window(start, source=source)
        if t_first < win.open_ts:
            win.open_ts, win.open = t_first, p_first
        if t_last >= win.close_ts:
            win.close_ts, win.close = t_last, p_last
        if high > win.high:
            win.high = high
        if low < win.low:
            win.low = low
        win.volume, win.pv = _added(win.volume, volumes), _added(win.pv, pvs)
        win.trades += n
        win.dirty = True
        self.counters.trades += n
        return True

    def _add_window(
        self,
        windows: dict[int, _Window],
        start: int,
        final_before: int,
        ts: Any,
        px: Any,
        sz: Any,
        late: list[int],
        idx: Any,
        source: str,
    ) -> None:
        win = windows.get(start)
        n = len(ts)
        if win is None:
            if start < final_before:
                late.extend(range(n) if idx is None else idx.tolist())
                return
            win = windows[start] = _Window(start, source=source)
        i_first = int(ts.argmin())
        i_last = n - 1 - int(ts[::-1].argmax())  # ties: the later arrival is the close
        t_first, t_last = int(ts[i_first]), int(ts[i_last])
        if t_first < win.open_ts:
            win.open_ts, win.open = t_first, float(px[i_first])
        if t_last >= win.close_ts:
            win.close_ts, win.close = t_last, float(px[i_last])
        hi, lo = float(px.max()), float(px.min())
        if hi > win.high:
            win.high = hi
        if lo < win.low:
            win.low = lo
        win.volume += volume_sum(sz)
        win.pv += pv_sum(px, sz)
        win.trades += n
        win.dirty = True

    # --- event time ---------------------------------------------------------------------------------------------
    def frontier(self, symbol: str, source_now_ns: int | None = None) -> int:
        """Event-time 'now' for `symbol`: the newest trade, or the source clock if that is later."""
        top = self._max_event.get(symbol, _NEG_INF)
        return top if source_now_ns is None or source_now_ns < top else source_now_ns

    def advance(self, symbol: str, source_now_ns: int | None, wall_ns: int) -> list[LiveBar]:
        """Emit what the frontier allows: provisional bars for closed windows, final ones past the lateness."""
        frontier = self.frontier(symbol, source_now_ns)
        if frontier <= _NEG_INF:
            return []
        width, lateness = self.width, self.lateness_ns
        final_before = ((frontier - lateness) // width) * width
        if final_before > self._final_before.get(symbol, _NEG_INF):
            self._final_before[symbol] = final_before
        windows = self._open.get(symbol)
        if not windows:
            return []
        out: list[LiveBar] = []
        blocked = self._blocked(symbol) if symbol in self._gaps else []
        for start in sorted(windows):
            end = start + width
            if end > frontier:
                break
            win = windows[start]
            if end + lateness <= frontier and not (blocked and self._in_gap(start, blocked)):
                out.append(self._emit(symbol, win, "final", wall_ns))
                del windows[start]
            elif win.dirty:
                out.append(self._emit(symbol, win, "provisional", wall_ns))
        return out

    def flush(self, symbol: str | None, wall_ns: int) -> list[LiveBar]:
        """Finalize every open window (end of stream); bars of pending gaps stay flagged."""
        out: list[LiveBar] = []
        for sym in [symbol] if symbol is not None else list(self._open):
            windows = self._open.get(sym, {})
            for start in sorted(windows):
                win = windows.pop(start)
                if self._in_gap(start, self._gaps.get(sym, [])):
                    win.gap = True
                out.append(self._emit(sym, win, "final", wall_ns))
        return out

    def _joined_inside(self, symbol: str, win: _Window) -> None:
        """Flag the symbol's first window when the stream joined after it began: trades before the first one seen
        may be missing (a stream cannot tell a late join from a quiet start, so it says the bar may be incomplete)."""
        first = self._first_window.get(symbol)
        if first is None:
            # Before its first emission every window of the symbol is still open: the earliest is its first.
            first = self._first_window[symbol] = min(min(self._open.get(symbol, {}), default=win.start), win.start)
        if win.start == first and not win.backfilled and win.open_ts > win.start:
            win.gap = True

    def _emit(self, symbol: str, win: _Window, status: str, wall_ns: int) -> LiveBar:
        self._joined_inside(symbol, win)
        if not win.gap and not win.backfilled:
            # The window where trades resume after an outage is created after its gap closed (`close_gap` flags
            # only windows that exist): it overlaps the gap all the same, unless a backfill replaced it.
            gaps = self._gaps.get(symbol)
            if gaps and self._in_gap(win.start, gaps):
                win.gap = True
        win.revision += 1
        win.dirty = False
        if status == "final":
            self.counters.final += 1
        else:
            self.counters.provisional += 1
        if win.gap:
            self.counters.gap_bars += 1
        vwap = (
            _vwap(win.pv, win.volume, win.low, win.high)
            if win.volume > 0 and not win.backfilled
            else (math.nan if win.backfilled else win.close)
        )
        return LiveBar(
            symbol, self.label, win.start, win.open, win.high, win.low, win.close, win.volume, vwap,
            -1 if win.backfilled else win.trades, status, win.gap, win.backfilled, win.revision,
            win.source or self.source, wall_ns,
        )  # fmt: skip

    def open_windows(self, symbol: str) -> list[LiveBar]:
        """The open (not yet final) windows as provisional bars, without emitting them."""
        windows = sorted(self._open.get(symbol, {}).values(), key=lambda w: w.start)
        if windows:
            self._joined_inside(symbol, windows[0])
        return [
            LiveBar(
                symbol,
                self.label,
                w.start,
                w.open,
                w.high,
                w.low,
                w.close,
                w.volume,
                _vwap(w.pv, w.volume, w.low, w.high) if w.volume > 0 else w.close,
                w.trades,
                "provisional",
                w.gap,
                w.backfilled,
                w.revision + 1,
                w.source or self.source,
                0,
            )
            for w in windows
        ]

    # --- gaps and backfill --------------------------------------------------------------------------------------
    def open_gap(self, symbol: str, start_ns: int, wall_ns: int = 0) -> Gap:
        """A feed for `symbol` went quiet at `start_ns` (its last trade); windows from there on are held back."""
        gap = Gap(symbol, start_ns, None, True, wall_ns, final_before=self._final_before.get(symbol, _NEG_INF))
        self._gaps.setdefault(symbol, []).append(gap)
        for start, win in self._open.get(symbol, {}).items():
            if start + self.width > start_ns:
                win.gap = True
                win.dirty = True
        return gap

    def close_gap(self, gap: Gap, end_ns: int, wall_ns: int = 0) -> None:
        """The feed is back (at `wall_ns` on our clock); its first trade after the gap is at `end_ns`."""
        gap.end_ns = max(end_ns, gap.start_ns)
        gap.closed_wall_ns = wall_ns
        self._flag_gap(gap)

    def _flag_gap(self, gap: Gap) -> None:
        """Mark the open windows that overlap the (closed) gap as spanning it."""
        for start, win in self._open.get(gap.symbol, {}).items():
            if self._overlaps(start, gap):
                win.gap = True

    def gap_windows(self, gap: Gap) -> tuple[int, int]:
        """`[first window start, last window end)` a closed gap touches."""
        end = gap.end_ns if gap.end_ns is not None else gap.start_ns
        first = gap.start_ns - gap.start_ns % self.width
        last = end - end % self.width + self.width
        return first, last

    def gap_ready(self, gap: Gap, source_now_ns: int | None) -> bool:
        """True when every window of a closed gap has closed in event time (its history bars are complete)."""
        if gap.end_ns is None or not gap.pending:
            return False
        _, last_end = self.gap_windows(gap)
        return self.frontier(gap.symbol, source_now_ns) >= last_end + self.lateness_ns

    def resolve_gap(self, gap: Gap, history: Sequence[tuple[int, float, float, float, float, float]] | None) -> int:
        """Fill a gap's windows from history bars `(ts_ns, o, h, l, c, v)`; None = backfill failed (bars stay flagged).

        Returns the number of windows filled. History bars replace streamed windows in the gap (they are complete);
        streamed windows without a history bar keep `gap=True`.
        """
        gap.pending = False
        if history is None:
            # Its windows exist by now (the first trade after the gap made the last one): they stay flagged, and the
            # gap is forgotten (kept, every outage without history would add one for good).
            self._flag_gap(gap)
            self._gaps[gap.symbol] = [g for g in self._gaps.get(gap.symbol, []) if g is not gap]
            return 0
        first, last_end = self.gap_windows(gap)
        windows = self._open.setdefault(gap.symbol, {})
        filled = 0
        for ts_ns, o, h, low, c, v in history:
            if not first <= ts_ns < last_end or ts_ns % self.width:
                continue
            win = windows.get(ts_ns)
            if win is None:
                # A window emitted final before the gap opened (the last trade's, closed by the clock) is complete;
                # one with no trades has no bar (providers' klines include empty intervals): no flat bar.
                if ts_ns < gap.final_before or not v > 0:
                    continue
                win = windows[ts_ns] = _Window(ts_ns)
            win.open, win.high, win.low, win.close, win.volume = o, h, low, c, v
            win.open_ts, win.close_ts = ts_ns, ts_ns + self.width - 1
            win.pv, win.trades = math.nan, -1
            win.backfilled, win.gap, win.dirty = True, False, True
            win.source = "backfill"
            filled += 1
            self.counters.backfilled += 1
        self._gaps[gap.symbol] = [g for g in self._gaps.get(gap.symbol, []) if g is not gap]
        return filled

    def pending_gaps(self, symbol: str | None = None) -> list[Gap]:
        """Gaps not yet backfilled."""
        symbols = [symbol] if symbol is not None else list(self._gaps)
        return [g for s in symbols for g in self._gaps.get(s, []) if g.pending]

    def _blocked(self, symbol: str) -> list[Gap]:
        return [g for g in self._gaps.get(symbol, []) if g.pending]

    def _overlaps(self, start: int, gap: Gap) -> bool:
        end = gap.end_ns if gap.end_ns is not None else 2**62
        return start + self.width > gap.start_ns and start <= end

    def _in_gap(self, start: int, gaps: list[Gap]) -> bool:
        return any(self._overlaps(start, g) for g in gaps)
