"""Live features for many symbols, equal to the training pipeline's (`gpt_trader.data.features`).

Recomputing the polars pipeline on a window costs ~8 ms per symbol (query planning dominates), too slow for a
bar-to-order budget of a few ms across 50 symbols. So each symbol keeps the recursions and bounded windows the
offline definitions imply, and the bars of one timestamp are processed together: `LiveFeatures.update_many`
advances every symbol of the batch in a few numpy operations instead of a Python loop per symbol.

State layout: each symbol owns a slot, a row of `_state` (rows grow as symbols appear), and `_count[slot]`, its
bars so far, which alone decides warm-up (each feature's first valid bar is a fixed count).
- Four ring buffers side by side: log closes (max return horizon + 1), 1-bar log returns (max volatility
  window), closes (Bollinger window), log1p volumes (volume-z window). A symbol's n-th bar (from 0) sits at
  position n % size of each ring (its return at (n - 1) % size), so each bar's reads and writes, and every
  window of a ready bar, are positions derived from the count: one fancy-indexed gather per batch.
- Five columns for the `ewm_mean(adjust=False)` recursions: RSI average gain and loss, MACD fast and slow EMAs,
  MACD signal.
Window means and standard deviations are two-pass (`np.add.reduceat` per window), as numpy's; the calendar
features are computed once per distinct timestamp (cached). A batch of one bar (`update`, `warm_up`) takes a
plain-float path over the same state, since numpy's per-call overhead would make it ~3x slower; tests hold the
two paths equal.

`tests/unit/serving/test_features.py` replays real series through both this and the offline pipeline and
requires equality, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np

from gpt_trader.core.types import Bar
from gpt_trader.data.config import FeaturesConfig
from gpt_trader.data.features import SESSIONS, feature_columns

_FLAT_REL_TOL = 1e-10  # as gpt_trader.data.features: a std this small relative to the level is a flat window
_MINUTES_PER_DAY = 1440
_INITIAL_SLOTS = 8


class _Layout:
    """Column indices of a symbol's state row for one `FeaturesConfig` (see the module docstring)."""

    def __init__(self, config: FeaturesConfig) -> None:
        horizons, windows = list(config.return_horizons), list(config.volatility_windows)
        bollinger, volume = config.bollinger_window, config.volume_z_window
        # Parts of a row: the four rings, then one column per EWM (size 1: always position 0).
        sizes = [max(horizons) + 1, max(windows), bollinger, volume, 1, 1, 1, 1, 1]
        bases = [sum(sizes[:i]) for i in range(len(sizes))]
        self.width = sum(sizes)
        self.sizes, self.bases = sizes, bases
        self.horizons, self.windows = horizons, windows
        # A column is (part, shift): position (count + shift) % size of the part, count = the symbol's bars before
        # this one. A step reads the previous log close, previous close and the EWMs, then writes `_NEW`.
        reads = [(0, -1), (2, -1), *((p, 0) for p in range(4, 9))]
        writes = [(0, 0), (1, -1), (2, 0), (3, 0), *((p, 0) for p in range(4, 9))]
        self.step = _columns([*reads, *writes], sizes, bases)
        # A ready bar gathers: the log close h bars back per horizon; the statistic windows (the last w returns per
        # volatility window, the close ring, the log-volume ring: order within a window is irrelevant); then the
        # current close and log volume.
        window = [(0, -h) for h in horizons]
        for w in windows:
            window += [(1, -1 - j) for j in range(w)]
        window += [(2, j) for j in range(bollinger)] + [(3, j) for j in range(volume)] + [(2, 0), (3, 0)]
        self.window = _columns(window, sizes, bases)
        widths = [*windows, bollinger, volume]
        self.n_returns, self.n_vols = len(horizons), len(windows)
        self.stat_starts = np.cumsum([0, *widths[:-1]])
        self.stat_widths = np.array(widths, dtype=float)
        self.stat_dof = self.stat_widths - np.array([1.0] * len(windows) + [0.0, 1.0])  # Bollinger: population std
        self.stat_of_col = np.repeat(np.arange(len(widths)), widths)
        rsi, fast, slow = 1.0 / config.rsi_window, 2.0 / (config.macd_fast + 1), 2.0 / (config.macd_slow + 1)
        self.alpha_list = [rsi, rsi, fast, slow]
        self.alphas = np.array(self.alpha_list)
        self.signal_alpha = 2.0 / (config.macd_signal + 1)
        self.macd_slow = config.macd_slow
        self.bollinger_k = config.bollinger_k
        self.band_scale = np.array([config.bollinger_k, 1.0])
        # Bars until every feature exists: the MACD line exists from bar macd_slow, its signal macd_signal - 1 later.
        self.warm = max(
            sizes[0],
            sizes[1] + 1,
            config.rsi_window,
            config.macd_slow + config.macd_signal - 1,
            bollinger,
            volume,
        )


def _columns(cols: list[tuple[int, int]], sizes: list[int], bases: list[int]) -> tuple[np.ndarray, ...]:
    """(shift, size, base) vectors: a symbol with `count` bars before this one uses (count + shift) % size + base."""
    return (
        np.array([shift for _, shift in cols]),
        np.array([sizes[part] for part, _ in cols]),
        np.array([bases[part] for part, _ in cols]),
    )


_READS = 7  # step columns read before the step; then the `_NEW` values are written
# Values a step writes per bar: log close, 1-bar log return, close, log1p volume, then the EWMs.
_NEW = 9
_UP, _DOWN, _FAST, _SLOW, _SIGNAL = 4, 5, 6, 7, 8


class LiveFeatures:
    """Incremental features for many symbols; warm it with history so the first live bar is already usable."""

    def __init__(self, config: FeaturesConfig) -> None:
        self.config = config
        self.columns = feature_columns(config)
        self._layout = _Layout(config)
        self._slots: dict[str, int] = {}
        self._last_ts: list[datetime] = []
        self._count = np.zeros(_INITIAL_SLOTS, dtype=np.int64)
        self._state = np.zeros((_INITIAL_SLOTS, self._layout.width))

    def update(self, bar: Bar) -> np.ndarray | None:
        """Feed one bar; returns that symbol's feature vector (order: `self.columns`) or None while warming up."""
        slots, closes, volumes, _ = self._check((bar,))
        return self._update_one(slots[0], closes[0], volumes[0], bar.ts)

    def update_many(self, bars: Sequence[Bar]) -> list[np.ndarray | None]:
        """Feed bars of distinct symbols (typically all closing at one timestamp); what `update` on each would return.

        Raises ValueError for a repeated symbol, a bar not after its symbol's previous one, or an unusable bar
        (non-positive or non-finite close, negative or non-finite volume); all bars are checked before any state
        changes, so a refused batch leaves every symbol as it was.
        """
        if not bars:
            return []
        slots, closes, volumes, same_ts = self._check(bars)
        if len(bars) == 1:
            return [self._update_one(slots[0], closes[0], volumes[0], bars[0].ts)]
        lay, state = self._layout, self._state
        rows = np.array(slots)[:, None]
        close = np.array(closes)
        n = self._count[rows[:, 0]]
        self._count[rows[:, 0]] = count = n + 1
        young = int(n.min()) < lay.warm  # some symbol still warming up (else the hot path skips its cases)
        shift, size, base = lay.step
        at = (n[:, None] + shift) % size + base
        prev = state[rows, at[:, :_READS]]
        new = np.empty((len(bars), _NEW))
        new[:, 0] = log_close = np.log(close)
        new[:, 1] = log_close - prev[:, 0]
        new[:, 2] = new[:, _FAST] = new[:, _SLOW] = close
        new[:, 3] = np.log1p(np.array(volumes))
        change = close - prev[:, 1]
        new[:, _UP] = np.maximum(change, 0.0)
        new[:, _DOWN] = np.maximum(-change, 0.0)
        ewm = prev[:, 2:6]  # `ewm_mean(adjust=False)`: y0 = x0, then y += alpha (x - y)
        new[:, _UP:_SIGNAL] = ewm + lay.alphas * (new[:, _UP:_SIGNAL] - ewm)
        if young:
            first = np.flatnonzero(n == 0)  # no previous bar: no return, a zero move, EMAs start at the close
            new[first, 1] = new[first, _UP] = new[first, _DOWN] = 0.0
            new[first, _FAST] = new[first, _SLOW] = close[first]
        macd = new[:, _FAST] - new[:, _SLOW]
        signal = prev[:, 6]
        new[:, _SIGNAL] = signal + lay.signal_alpha * (macd - signal)
        if young:  # the signal starts at the first MACD value (bar macd_slow)
            new[:, _SIGNAL] = np.where(
                count > lay.macd_slow, new[:, _SIGNAL], np.where(count == lay.macd_slow, macd, signal)
            )
        state[rows, at[:, _READS:]] = new

        out: list[np.ndarray | None] = [None] * len(bars)
        ready = np.flatnonzero(count >= lay.warm) if young else None
        if ready is not None:
            if ready.size == 0:
                return out
            rows, n, close, new, macd = rows[ready], n[ready], close[ready], new[ready], macd[ready]
        shift, size, base = lay.window
        window = state[rows, (n[:, None] + shift) % size + base]
        nr, nv = lay.n_returns, lay.n_vols
        values = window[:, nr:-2]
        mean = np.add.reduceat(values, lay.stat_starts, axis=1) / lay.stat_widths
        dev = values - mean[:, lay.stat_of_col]
        std = np.sqrt(np.add.reduceat(dev * dev, lay.stat_starts, axis=1) / lay.stat_dof)

        features = np.empty((len(rows), len(self.columns)))
        features[:, :nr] = new[:, :1] - window[:, :nr]
        features[:, nr : nr + nv] = std[:, :nv]
        i = nr + nv
        total = new[:, _UP] + new[:, _DOWN]
        features[:, i] = 50.0  # RSI of a window without movement
        np.divide(100.0 * new[:, _UP], total, out=features[:, i], where=total > 0)
        features[:, i + 1] = macd
        features[:, i + 2] = new[:, _SIGNAL]
        features[:, i + 3] = macd - new[:, _SIGNAL]
        features[:, i + 1 : i + 4] /= close[:, None]
        # Bollinger position and volume z: deviation / scale, 0 in a flat window (scale ~ 0 relative to the mean).
        level, scale = mean[:, nv:], std[:, nv:] * lay.band_scale
        ratio = np.zeros_like(level)
        np.divide(window[:, -2:] - level, scale, out=ratio, where=scale > _FLAT_REL_TOL * np.abs(level))
        features[:, i + 4] = ratio[:, 0]
        features[:, i + 5] = 2.0 * scale[:, 0] / level[:, 0]
        features[:, i + 6] = ratio[:, 1]
        if same_ts:
            features[:, i + 7 :] = calendar_features(bars[0].ts)
        else:
            batch = bars if ready is None else [bars[j] for j in ready.tolist()]
            features[:, i + 7 :] = [calendar_features(bar.ts) for bar in batch]
        if ready is None:
            return list(features)
        for j, row in zip(ready.tolist(), features, strict=True):
            out[j] = row
        return out

    def _update_one(self, slot: int, close: float, volume: float, ts: datetime) -> np.ndarray | None:
        """`update_many`'s step for one (checked) bar in plain floats: numpy's per-call overhead would triple it."""
        lay = self._layout
        n = int(self._count[slot])
        self._count[slot] = count = n + 1
        row = self._state[slot]
        (lc_size, ret_size, close_size, vol_size, *_), (lc_at, ret_at, close_at, vol_at, ewm_at, *_) = (
            lay.sizes,
            lay.bases,
        )
        log_close = math.log(close)
        up, down, fast, slow, signal = row[ewm_at : ewm_at + 5].tolist()
        if n == 0:
            ret, up, down, fast, slow = 0.0, 0.0, 0.0, close, close
        else:
            ret = log_close - float(row[lc_at + (n - 1) % lc_size])
            change = close - float(row[close_at + (n - 1) % close_size])
            a_up, a_down, a_fast, a_slow = lay.alpha_list
            up += a_up * (max(change, 0.0) - up)
            down += a_down * (max(-change, 0.0) - down)
            fast += a_fast * (close - fast)
            slow += a_slow * (close - slow)
        macd = fast - slow
        if count > lay.macd_slow:
            signal += lay.signal_alpha * (macd - signal)
        elif count == lay.macd_slow:
            signal = macd
        row[lc_at + n % lc_size] = log_close
        row[ret_at + (n - 1) % ret_size] = ret
        row[close_at + n % close_size] = close
        row[vol_at + n % vol_size] = log_volume = math.log1p(volume)
        row[ewm_at : ewm_at + 5] = (up, down, fast, slow, signal)
        if count < lay.warm:
            return None
        values = row.tolist()
        returns = [log_close - values[lc_at + (n - h) % lc_size] for h in lay.horizons]
        rets = _ring_tail(values[ret_at : ret_at + ret_size], n % ret_size)
        vols = [_mean_std(rets[-w:], ddof=1)[1] for w in lay.windows]
        total = up + down
        mid, std = _mean_std(values[close_at : close_at + close_size], ddof=0)
        band = lay.bollinger_k * std
        vmean, vstd = _mean_std(values[vol_at : vol_at + vol_size], ddof=1)
        return np.array(
            [
                *returns,
                *vols,
                100.0 * up / total if total > 0 else 50.0,
                macd / close,
                signal / close,
                (macd - signal) / close,
                _ratio(close - mid, band, mid),
                2.0 * band / mid,
                _ratio(log_volume - vmean, vstd, vmean),
                *calendar_features(ts),
            ]
        )

    def warm_up(self, bars: list[Bar]) -> np.ndarray | None:
        """Replay historical bars (oldest first); returns the features of the last one."""
        out = None
        for bar in bars:
            out = self.update(bar)
        return out

    def _check(self, bars: Sequence[Bar]) -> tuple[list[int], list[float], list[float], bool]:
        """Validate a batch, then register its new symbols and bar times: slots, closes, volumes, one shared ts?"""
        slots: list[int] = []
        closes: list[float] = []
        volumes: list[float] = []
        new_symbols: list[str] = []
        seen: set[str] = set()
        known, last_ts = self._slots, self._last_ts
        first_ts = bars[0].ts
        same_ts = True
        for bar in bars:
            symbol, ts, close, volume = bar.symbol, bar.ts, bar.close, bar.volume
            if symbol in seen:
                raise ValueError(f"{symbol}: more than one bar in one batch (at {ts})")
            seen.add(symbol)
            slot = known.get(symbol)
            if slot is None:
                slot = len(last_ts) + len(new_symbols)
                new_symbols.append(symbol)
            elif ts <= last_ts[slot]:
                raise ValueError(f"{symbol}: bar at {ts} is not after the previous bar at {last_ts[slot]}")
            if not (close > 0 and volume >= 0 and math.isfinite(close) and math.isfinite(volume)):
                raise ValueError(f"{symbol}: unusable bar at {ts} (close={close}, volume={volume})")
            slots.append(slot)
            closes.append(close)
            volumes.append(volume)
            same_ts = same_ts and ts == first_ts
        for symbol in new_symbols:
            known[symbol] = len(last_ts)
            last_ts.append(first_ts)
        if len(last_ts) > len(self._count):
            grow = max(len(last_ts), 2 * len(self._count)) - len(self._count)
            self._count = np.concatenate((self._count, np.zeros(grow, dtype=np.int64)))
            self._state = np.concatenate((self._state, np.zeros((grow, self._state.shape[1]))))
        for slot, bar in zip(slots, bars, strict=True):
            last_ts[slot] = bar.ts
        return slots, closes, volumes, same_ts


@lru_cache(maxsize=1024)
def calendar_features(ts: datetime) -> tuple[float, ...]:
    """minute_of_day, day_of_week (UTC) and the session flags, as in the offline pipeline.

    Cached: every symbol closing a bar at one timestamp shares them, and the time-zone conversions are most of
    a bar's feature cost.
    """
    epoch_minutes = int(ts.timestamp()) // 60
    flags = [float(_in_session(ts, tz, start, end)) for tz, start, end in SESSIONS.values()]
    return (float(epoch_minutes % _MINUTES_PER_DAY), float(((epoch_minutes // _MINUTES_PER_DAY) + 3) % 7), *flags)


@lru_cache(maxsize=8)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _in_session(ts: datetime, tz: str, open_minute: int, close_minute: int) -> bool:
    local = ts.astimezone(_zone(tz))
    minute = local.hour * 60 + local.minute
    return local.weekday() < 5 and open_minute <= minute < close_minute


def _ring_tail(ring: list[float], end: int) -> list[float]:
    """A ring's values oldest first, `end` being the position after the newest."""
    return ring[end:] + ring[:end] if end else ring


def _mean_std(values: list[float], ddof: int) -> tuple[float, float]:
    """Mean and standard deviation, two-pass as numpy's: on these 20-60 values plain floats are 4x faster."""
    n = len(values)
    mean = sum(values) / n
    return mean, math.sqrt(sum((v - mean) * (v - mean) for v in values) / (n - ddof))


def _ratio(deviation: float, scale: float, level: float) -> float:
    return 0.0 if scale <= _FLAT_REL_TOL * abs(level) else deviation / scale
