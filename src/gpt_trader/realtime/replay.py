"""Ticks from bars: the local exchange's data, real (bundled) or simulated.

Each bar becomes `ticks_per_bar` trades inside its window that aggregate back to it exactly: the first trade is at
the open time and price, the last carries the close, one trade touches the high and one the low, the others fall
between them; sizes are whole shares that sum to the bar's volume (fractional volumes are split with the remainder
on the last trade). A bar's ticks depend only on (seed, symbol, bar index), so a restarted exchange resumes the same
tape and trade ids (the tick's index in the symbol's tape) are stable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import numpy.typing as npt

Feed = Literal["auto", "replay", "simulated"]
ALIASES = {"SPY": "SPX", "QQQ": "IXIC", "^GSPC": "SPX", "^IXIC": "IXIC"}
_NS = 1_000_000_000


@dataclass(frozen=True)
class BarSeries:
    """Bars of one symbol as numpy columns (ts in ns since epoch, UTC)."""

    symbol: str
    timeframe_ns: int
    ts: npt.NDArray[np.int64]
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    volume: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def from_frame(cls, symbol: str, frame: object, timeframe_secs: int) -> BarSeries:
        """From a polars frame in BAR_SCHEMA."""
        import polars as pl

        assert isinstance(frame, pl.DataFrame)
        ts = frame["ts"].dt.epoch("ns").to_numpy().astype(np.int64)
        cols = [frame[c].to_numpy().astype(np.float64) for c in ("open", "high", "low", "close", "volume")]
        return cls(symbol, timeframe_secs * _NS, ts, *cols)


def canonical_symbol(symbol: str) -> str:
    """Bundled name for a symbol (SPY -> SPX, QQQ -> IXIC); others unchanged."""
    return ALIASES.get(symbol.upper(), symbol.upper())


@lru_cache(maxsize=32)
def load_series(symbol: str, feed: Feed = "auto", simulated_timeframe: str = "1m") -> BarSeries:
    """Bundled real bars for SPX/IXIC/GOOGL/EURUSD (and aliases) or seeded simulated bars for anything else."""
    from gpt_trader.core.errors import SourceError
    from gpt_trader.core.timeframe import Timeframe
    from gpt_trader.data.sources.bundled import CATALOG, BundledSource

    name = canonical_symbol(symbol)
    if feed != "simulated" and name in CATALOG:
        tf = Timeframe.parse(CATALOG[name].timeframe)
        return BarSeries.from_frame(symbol.upper(), BundledSource().fetch(name, None, None, tf), tf.seconds)
    if feed == "replay":
        raise SourceError(f"replay has no bundled data for {symbol!r}; bundled: {sorted(CATALOG)} (SPY = SPX)")
    from gpt_trader.data.config import SimulatedConfig
    from gpt_trader.data.sources.simulated import SimulatedSource

    tf = Timeframe.parse(simulated_timeframe)
    frame = SimulatedSource(SimulatedConfig()).fetch(symbol.upper(), None, None, tf)
    return BarSeries.from_frame(symbol.upper(), frame, tf.seconds)


def _seed(seed: int, symbol: str, index: int) -> list[int]:
    digest = hashlib.blake2b(symbol.encode(), digest_size=8).digest()
    return [seed, int.from_bytes(digest, "little"), index]


def ticks_in_bar(
    o: float, h: float, low: float, c: float, v: float, n: int, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(fractions of the window in [0, 1), prices, sizes) of `n >= 4` trades that aggregate to (o, h, low, c, v)."""
    if n < 4:
        raise ValueError(f"need at least 4 ticks per bar to touch open, high, low and close; got {n}")
    fracs = np.sort(rng.random(n))
    fracs[0] = 0.0
    prices = low + (h - low) * rng.random(n)
    prices[0], prices[-1] = o, c
    hi_pos, lo_pos = rng.choice(np.arange(1, n - 1), size=2, replace=False)
    prices[hi_pos], prices[lo_pos] = h, low
    weights = rng.random(n) + 0.05
    if float(v).is_integer() and v < 2**52:
        whole = int(v)
        parts = np.floor(weights / weights.sum() * whole)
        parts[-1] += whole - parts.sum()  # exact integer split
        sizes = parts
    else:
        sizes = weights / weights.sum() * v
        sizes[-1] = v - sizes[:-1].sum()
        if sizes[-1] < 0:
            sizes[:] = v / n
    return fracs, prices, sizes


class TickTape:
    """The trades of one symbol's bar series, addressable by tick index (`bar = index // ticks_per_bar`)."""

    def __init__(self, series: BarSeries, ticks_per_bar: int = 20, seed: int = 7) -> None:
        self.series = series
        self.ticks_per_bar = ticks_per_bar
        self.seed = seed
        self._cache: dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]] = {}

    def __len__(self) -> int:
        return len(self.series) * self.ticks_per_bar

    def bar_ticks(self, k: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(ts_ns, price, size) of bar `k`'s trades."""
        hit = self._cache.get(k)
        if hit is not None:
            return hit
        s = self.series
        rng = np.random.default_rng(_seed(self.seed, s.symbol, k))
        fr, px, sz = ticks_in_bar(
            float(s.open[k]),
            float(s.high[k]),
            float(s.low[k]),
            float(s.close[k]),
            float(s.volume[k]),
            self.ticks_per_bar,
            rng,
        )
        ts = s.ts[k] + (fr * s.timeframe_ns).astype(np.int64)
        ts = np.minimum(ts, s.ts[k] + s.timeframe_ns - 1)
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[k] = (ts, px, sz)
        return ts, px, sz

    def chunk(
        self, start: int, count: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """(ts, price, size, trade_id) of ticks `[start, start + count)`, clipped to the tape."""
        end = min(start + count, len(self))
        parts_ts, parts_px, parts_sz = [], [], []
        i = start
        while i < end:
            k, j = divmod(i, self.ticks_per_bar)
            take = min(end - i, self.ticks_per_bar - j)
            ts, px, sz = self.bar_ticks(k)
            parts_ts.append(ts[j : j + take])
            parts_px.append(px[j : j + take])
            parts_sz.append(sz[j : j + take])
            i += take
        if not parts_ts:
            e = np.empty(0)
            return e.astype(np.int64), e, e, e.astype(np.int64)
        return (
            np.concatenate(parts_ts), np.concatenate(parts_px), np.concatenate(parts_sz),
            np.arange(start, end, dtype=np.int64),
        )  # fmt: skip
