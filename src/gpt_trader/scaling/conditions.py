"""Market-condition classifier: QUIET..EXTREME from realized volatility, volume and tick rate, with hysteresis.

Each update is O(1): rolling sums over fixed windows, so a decision costs microseconds whatever the history length.

Score (in annualized-volatility units) = realized vol * (1 + activity_weight * clip(max(volume z, tick-rate z), 0,
cap)). Realized vol = sqrt(sum r^2 / sum dt * year_secs) over a window of log returns, where `dt` is the bar length
in bar mode and the elapsed event time in tick mode, so one set of thresholds serves daily and intraday data. It is
the larger of a fast (`fast_vol_window`) and a slow (`vol_window`) estimate: a shock raises the fast one at once,
and the slow one keeps the condition up until the shock has really passed - scale up fast, scale down slowly.
The tick-rate z-score only counts in tick mode: bars arrive at a fixed rate by construction, and their activity
shows in volume instead.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import IntEnum

from gpt_trader.scaling.config import ConditionConfig

# Rolling sums are rebuilt from the window this often, so float error from add/subtract cannot accumulate.
_RESYNC_EVERY = 4096
# z-scores need a few baseline points and a spread that is more than rounding noise.
_MIN_BASELINE = 3
_MIN_STD = 1e-9


class MarketCondition(IntEnum):
    """Market state, ordered from calmest to wildest (the same ladder as the simulated source's `Regime`)."""

    QUIET = 0
    NORMAL = 1
    ACTIVE = 2
    VOLATILE = 3
    EXTREME = 4

    @property
    def label(self) -> str:
        """Lower-case name, as used in config profiles and status."""
        return self.name.lower()


class RollingWindow:
    """The last `size` values with their running sum and sum of squares (shifted by the first value for accuracy)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: deque[float] = deque()
        self._shift = 0.0
        self._sum = 0.0
        self._sumsq = 0.0
        self._pushes = 0

    def __len__(self) -> int:
        return len(self._values)

    def push(self, value: float) -> None:
        """Append `value`, dropping the oldest one when full."""
        if not self._values:
            self._shift = value
        if len(self._values) == self.size:
            old = self._values.popleft() - self._shift
            self._sum -= old
            self._sumsq -= old * old
        self._values.append(value)
        x = value - self._shift
        self._sum += x
        self._sumsq += x * x
        self._pushes += 1
        if self._pushes % _RESYNC_EVERY == 0:
            self._resync()

    def _resync(self) -> None:
        self._shift = self._values[0]
        xs = [v - self._shift for v in self._values]
        self._sum = math.fsum(xs)
        self._sumsq = math.fsum(x * x for x in xs)

    @property
    def total(self) -> float:
        """Sum of the values in the window."""
        return self._sum + self._shift * len(self._values)

    @property
    def mean(self) -> float:
        """Mean of the window (0 when empty)."""
        n = len(self._values)
        return self.total / n if n else 0.0

    @property
    def std(self) -> float:
        """Population standard deviation of the window (0 with fewer than two values)."""
        n = len(self._values)
        if n < 2:
            return 0.0
        m = self._sum / n
        return math.sqrt(max(self._sumsq / n - m * m, 0.0))

    def zscore(self, value: float) -> float:
        """How many standard deviations `value` lies from the window mean; 0 while the baseline is too thin."""
        std = self.std
        if len(self._values) < _MIN_BASELINE or std <= _MIN_STD * (1.0 + abs(self.mean)):
            return 0.0
        return (value - self.mean) / std


@dataclass(frozen=True, slots=True)
class MarketFeatures:
    """What the classifier sees after one update."""

    realized_vol: float
    volume_z: float
    tick_rate_per_sec: float
    tick_rate_z: float
    score: float
    ready: bool

    def as_dict(self) -> dict[str, float | bool]:
        """Plain values for status and logs."""
        return {
            "realized_vol": self.realized_vol,
            "volume_z": self.volume_z,
            "tick_rate_per_sec": self.tick_rate_per_sec,
            "tick_rate_z": self.tick_rate_z,
            "score": self.score,
            "ready": self.ready,
        }


class FeatureTracker:
    """Turns a stream of (price, volume, time) into `MarketFeatures` with O(1) work per update."""

    def __init__(self, config: ConditionConfig) -> None:
        self.config = config
        self._sq_returns = RollingWindow(config.vol_window)
        self._dts = RollingWindow(config.vol_window)
        self._fast_sq_returns = RollingWindow(config.fast_vol_window)
        self._fast_dts = RollingWindow(config.fast_vol_window)
        self._log_volume = RollingWindow(config.volume_window)
        self._times: deque[float] = deque(maxlen=config.tick_window + 1)
        self._log_rate = RollingWindow(config.volume_window)
        self._last_price: float | None = None
        self._last_time: float | None = None

    def update(self, price: float, volume: float, time_secs: float) -> MarketFeatures:
        """Fold in one observation at `time_secs` (any epoch, seconds) and return the current features."""
        if not (math.isfinite(price) and price > 0):
            raise ValueError(f"price must be positive and finite, got {price!r}")
        if not (math.isfinite(volume) and volume >= 0):
            raise ValueError(f"volume must be non-negative and finite, got {volume!r}")
        cfg = self.config
        if self._last_price is not None and self._last_time is not None:
            dt = cfg.bar_interval_secs if cfg.bar_interval_secs is not None else max(time_secs - self._last_time, 0.0)
            r = math.log(price / self._last_price)
            for window, value in (
                (self._sq_returns, r * r),
                (self._dts, dt),
                (self._fast_sq_returns, r * r),
                (self._fast_dts, dt),
            ):
                window.push(value)
        self._last_price, self._last_time = price, time_secs

        # Volume against the baseline *before* this bar, so a spike is measured against calm, not against itself.
        log_volume = math.log1p(volume)
        volume_z = self._log_volume.zscore(log_volume)
        self._log_volume.push(log_volume)

        self._times.append(time_secs)
        tick_rate, tick_z = 0.0, 0.0
        elapsed = self._times[-1] - self._times[0]
        if len(self._times) > 1 and elapsed > 0:
            tick_rate = (len(self._times) - 1) / elapsed
            log_rate = math.log(tick_rate)
            if cfg.bar_interval_secs is None:
                tick_z = self._log_rate.zscore(log_rate)
            self._log_rate.push(log_rate)

        ready = len(self._sq_returns) >= cfg.vol_window and self._dts.total > 0
        vol = max(
            _annual_vol(self._sq_returns, self._dts, cfg.year_secs),
            _annual_vol(self._fast_sq_returns, self._fast_dts, cfg.year_secs),
        )
        activity = min(max(volume_z, tick_z, 0.0), cfg.activity_z_cap)
        score = vol * (1.0 + cfg.activity_weight * activity)
        return MarketFeatures(vol, volume_z, tick_rate, tick_z, score, ready)


def _annual_vol(sq_returns: RollingWindow, dts: RollingWindow, year_secs: float) -> float:
    total_dt = dts.total
    return math.sqrt(max(sq_returns.total, 0.0) / total_dt * year_secs) if total_dt > 0 else 0.0


def condition_for_score(score: float, boundaries: tuple[float, ...]) -> MarketCondition:
    """The condition a score falls in, with no memory (used for forecasts and as the no-hysteresis baseline)."""
    level = sum(score >= b for b in boundaries)
    return MarketCondition(level)


class ConditionClassifier:
    """Score -> condition with hysteresis bands around each boundary and a minimum dwell before any change.

    Starts in NORMAL (the neutral prior) and ignores updates whose features are not ready yet.
    """

    def __init__(self, config: ConditionConfig, initial: MarketCondition = MarketCondition.NORMAL) -> None:
        self.config = config
        self.condition = initial
        self.dwell = 0
        self.changes = 0

    def update(self, score: float) -> MarketCondition:
        """Fold in one score and return the (possibly unchanged) condition."""
        cfg = self.config
        b, h = cfg.vol_boundaries, cfg.hysteresis_band
        current = int(self.condition)
        self.dwell += 1
        # Up: the highest level whose lower boundary the score clears by the band.
        up = current
        while up < len(b) and score >= b[up] * (1.0 + h):
            up += 1
        # Down: the lowest level whose upper boundary the score sits under by the band.
        down = current
        while down > 0 and score < b[down - 1] * (1.0 - h):
            down -= 1
        target = up if up > current else down
        min_dwell = cfg.min_dwell_up_updates if target > current else cfg.min_dwell_down_updates
        if target != current and self.dwell >= min_dwell:
            self.condition = MarketCondition(target)
            self.dwell = 0
            self.changes += 1
        return self.condition


class MarketConditionDetector:
    """Features plus classifier: the one object the autoscaler feeds."""

    def __init__(self, config: ConditionConfig) -> None:
        self.features = FeatureTracker(config)
        self.classifier = ConditionClassifier(config)
        self.last: MarketFeatures | None = None

    @property
    def condition(self) -> MarketCondition:
        """The current condition."""
        return self.classifier.condition

    def update(self, price: float, volume: float, time_secs: float) -> tuple[MarketCondition, MarketFeatures]:
        """Fold in one observation; the condition only moves once the volatility window is full."""
        features = self.features.update(price, volume, time_secs)
        self.last = features
        if features.ready:
            self.classifier.update(features.score)
        return self.classifier.condition, features
