"""Scaling decision latency: classify + forecast + policy per market update, excluding Prefect I/O.

Replays the real S&P 500 daily bars (1999-2018, bundled) through `AutoScaler.update_market_data` (not started, so
nothing is actuated) and times every update. The baseline does the same decisions the naive way: it keeps the
history and recomputes the rolling statistics from scratch with pandas on every update, then runs the same
forecaster and policy. Both paths' scores are compared value by value before anything is timed, so the ratio
compares equal work. Target: < 100 ms per decision (the seed claims 100 decisions/min). Nothing is asserted.

    python benchmarks/scaling.py [--updates 20000] [--baseline-updates 2000]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from gpt_trader.core.clock import SimClock
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.sources.bundled import BundledSource
from gpt_trader.scaling import AutoScaler, RecordingActuator, ScalingConfig, decide_scaling
from gpt_trader.scaling.conditions import ConditionClassifier
from gpt_trader.scaling.config import ConditionConfig
from gpt_trader.scaling.forecast import LoadForecaster

TARGET_MS = 100.0
Update = Callable[[float, float], float | None]


def load_stream(n: int) -> tuple[list[float], list[float]]:
    """`n` (price, volume) updates: the S&P 500 history, repeated (each pass rescaled to continue the last)."""
    bars = BundledSource().fetch("SPX", None, None, Timeframe.parse("1d"))
    close, volume = bars["close"].to_numpy(), bars["volume"].to_numpy()
    prices: list[float] = []
    volumes: list[float] = []
    scale = 1.0
    while len(prices) < n:
        prices.extend((close * scale).tolist())
        volumes.extend(volume.tolist())
        scale = prices[-1] / close[0]
    return prices[:n], volumes[:n]


class PandasBaseline:
    """The naive scaler: full history in lists, rolling statistics recomputed with pandas on every update."""

    def __init__(self, config: ScalingConfig) -> None:
        self.config = config
        self.prices: list[float] = []
        self.volumes: list[float] = []
        self.classifier = ConditionClassifier(config.conditions)
        self.forecaster = LoadForecaster(config.forecast, config.conditions)
        self.clock = SimClock(datetime(2000, 1, 1, tzinfo=UTC))

    def score(self) -> float | None:
        """The stress score from scratch over the trailing windows (None until the slow vol window is full)."""
        c: ConditionConfig = self.config.conditions
        need = max(c.vol_window, c.volume_window) + 1
        prices = pd.Series(self.prices[-need:])
        r2 = np.log(prices).diff().pow(2).dropna()
        if len(r2) < c.vol_window:
            return None
        per_bar = c.year_secs / (c.bar_interval_secs or 1.0)
        vol = max(math.sqrt(r2.tail(n).mean() * per_bar) for n in (c.vol_window, c.fast_vol_window))
        log_volume = np.log1p(pd.Series(self.volumes[-(c.volume_window + 1) :]))
        base = log_volume.iloc[:-1]
        std = base.std(ddof=0)
        z = 0.0 if len(base) < 3 or std <= 1e-9 * (1 + abs(base.mean())) else (log_volume.iloc[-1] - base.mean()) / std
        return vol * (1 + c.activity_weight * min(max(z, 0.0), c.activity_z_cap))

    def update(self, price: float, volume: float) -> float | None:
        """Append and decide; returns the score for the equality check."""
        self.prices.append(price)
        self.volumes.append(volume)
        self.clock.advance(timedelta(days=1))
        score = self.score()
        if score is None:
            decide_scaling(self.config, at=self.clock.now(), condition=self.classifier.condition)
            return None
        condition = self.classifier.update(score)
        forecast = self.forecaster.update(score)
        decide_scaling(self.config, at=self.clock.now(), condition=condition, forecast=forecast.condition)
        return score


def incremental(config: ScalingConfig) -> Update:
    """The real path: `AutoScaler.update_market_data` with a simulated daily clock, no actuation."""
    clock = SimClock(datetime(2000, 1, 1, tzinfo=UTC))
    scaler = AutoScaler(config, actuator=RecordingActuator(), clock=clock)

    def update(price: float, volume: float) -> float | None:
        clock.advance(timedelta(days=1))
        scaler.update_market_data(price, volume)
        features = scaler.features
        return features.score if features is not None and features.ready else None

    return update


def time_updates(update: Update, prices: list[float], volumes: list[float]) -> np.ndarray:
    """Per-update latency in nanoseconds."""
    out = np.empty(len(prices), dtype=np.int64)
    clock = time.perf_counter_ns
    for i, (p, v) in enumerate(zip(prices, volumes, strict=True)):
        t0 = clock()
        update(p, v)
        out[i] = clock() - t0
    return out


def report(name: str, ns: np.ndarray) -> float:
    """Print p50/p99/mean and decisions/s; return the p50 in microseconds."""
    us = ns / 1e3
    p50, p99, mean = np.percentile(us, 50), np.percentile(us, 99), us.mean()
    print(
        f"{name:<34} n={len(us):>6}  p50 {p50:9.1f} us  p99 {p99:9.1f} us  mean {mean:9.1f} us  "
        f"{1e6 / mean:>10,.0f} decisions/s"
    )
    return float(p50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=20_000)
    parser.add_argument("--baseline-updates", type=int, default=2_000)
    args = parser.parse_args()
    config = ScalingConfig()
    prices, volumes = load_stream(max(args.updates, args.baseline_updates))

    # Equal work first: both paths must produce the same scores on the same updates.
    check = min(args.baseline_updates, 1000)
    fast, slow = incremental(config), PandasBaseline(config)
    for p, v in zip(prices[:check], volumes[:check], strict=True):
        a, b = fast(p, v), slow.update(p, v)
        assert (a is None) == (b is None), (a, b)
        assert a is None or b is None or math.isclose(a, b, rel_tol=1e-9), (a, b)
    print(f"scores agree on {check} updates (rel 1e-9)")

    fast_ns = time_updates(incremental(config), prices[: args.updates], volumes[: args.updates])
    slow_ns = time_updates(
        PandasBaseline(config).update, prices[: args.baseline_updates], volumes[: args.baseline_updates]
    )
    p50_fast = report("incremental (AutoScaler update)", fast_ns)
    p50_slow = report("baseline (pandas from scratch)", slow_ns)
    p99_fast = float(np.percentile(fast_ns, 99)) / 1e6
    print(f"speed-up at p50: {p50_slow / p50_fast:.1f}x")
    print(
        f"target < {TARGET_MS:.0f} ms per decision: p99 {p99_fast:.3f} ms "
        f"({'met' if p99_fast < TARGET_MS else 'NOT met'}); seed's 100 decisions/min = 1.7/s, "
        f"measured {1e9 / fast_ns.mean():,.0f}/s"
    )


if __name__ == "__main__":
    main()
