"""The batched paths' building blocks equal what they replace: `TickRing.write_rows` is `write_row` per trade,
`OffsetEstimator.observe` is a sliding-window minimum, `Feed.observe_clock_run` is `observe_clock` per frame, and
runs of Alpaca trade frames whose last frame crosses into the next window(s) (`_add_crossing`) give exactly what
frame-by-frame handling gives, on adversarial timing."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pytest

from gpt_trader.realtime import DataSource, RealtimePipeline, StreamConfig
from gpt_trader.realtime.buffer import KIND_TRADE, TickRing
from gpt_trader.realtime.bus import InProcessBus
from gpt_trader.realtime.clock import OffsetEstimator
from gpt_trader.realtime.config import RealtimeConfig
from gpt_trader.realtime.feed import Feed
from gpt_trader.realtime.health import SourceHealth
from gpt_trader.realtime.sources.binance import BinanceAdapter

from .test_frame_batches import SYMBOLS, drive

S = 1_000_000_000
MS = 1_000_000
ENV = {"APCA_API_KEY_ID": "k", "APCA_API_SECRET_KEY": "s"}


@pytest.mark.parametrize("policy", ["overwrite", "drop_newest"])
@pytest.mark.parametrize("capacity", [1, 3, 7, 100, 1000])
def test_write_rows_equals_write_row_each(policy, capacity):
    rng = random.Random(capacity)
    a, b = TickRing(capacity, policy), TickRing(capacity, policy)
    for step in range(400):
        n = rng.choice([0, 1, 2, 5, 30, 300])
        ts = [rng.randrange(10**12) for _ in range(n)]
        corr = [t + 7 for t in ts]
        px = [rng.uniform(1, 2) for _ in range(n)]
        sz = [rng.choice([0.0, 1.0, rng.uniform(0, 5)]) for _ in range(n)]
        quote = (rng.uniform(1, 2), rng.uniform(2, 3), 1.0, 2.0)
        got = a.write_rows(ts, step, corr, px, sz, *quote, KIND_TRADE)
        rows = zip(ts, corr, px, sz, strict=True)
        exp = sum(b.write_row(t, step, c, p, z, *quote, KIND_TRADE) for t, c, p, z in rows)
        assert got == exp
        if rng.random() < 0.2:  # a numpy write in between stores what is staged first
            row = {"ts_event": np.arange(3), "price": 1.5, "size": 2.0, "ts_init": step}
            assert a.write(3, row) == b.write(3, row)
        assert vars(a.counters) == vars(b.counters)
        assert len(a) == len(b)
        if rng.random() < 0.1:
            sa, sb = a.snapshot(), b.snapshot()
            assert {k: v.tolist() for k, v in sa.items()} == {k: v.tolist() for k, v in sb.items()}
    sa, sb = a.snapshot(), b.snapshot()
    assert {k: v.tolist() for k, v in sa.items()} == {k: v.tolist() for k, v in sb.items()}


def test_offset_estimator_is_the_sliding_window_minimum():
    rng = random.Random(3)
    for window in (1, 2, 5, 64):
        est, samples = OffsetEstimator(window), []
        for _ in range(2000):
            recv, exch = rng.randrange(10**9), rng.randrange(10**9)
            est.observe(recv, exch)
            samples.append(recv - exch)
            assert est.offset_ns == min(samples[-window:])
            assert est.last_delay_ns == samples[-1] - min(samples[-window:])


def test_observe_clock_run_equals_observe_clock_each_up_to_the_first_time_too_far_ahead():
    """`Feed.observe_clock_run` (frames received together) is `observe_clock` per frame in turn, after checking each
    time against the source's clock as the frames before it estimate it: it stops at the first one too far ahead."""
    rng = random.Random(4)
    config = StreamConfig(DataSource.BINANCE, ["AAA"])

    def feed(window: int) -> Feed:
        return Feed(config, BinanceAdapter(), "ws://x", 0, SourceHealth("x"), OffsetEstimator(window), frozenset())

    for window in (1, 3, 64):
        a, b = feed(window), feed(window)
        for _ in range(300):
            recv = rng.randrange(10**12, 2 * 10**12)
            times = [recv - rng.randrange(-5 * MS, 50 * MS) for _ in range(rng.choice([0, 1, 2, 10]))]
            ahead = rng.choice([None, 0, MS, 10 * MS])
            got = a.observe_clock_run(recv, times, ahead)
            exp: list[int] = []
            for t in times:
                offset = b.estimator.offset_ns
                if ahead is not None and offset is not None and t > recv - offset + ahead:
                    break
                exp.append(b.observe_clock(recv, t)[0])
            assert got == exp
            ea, eb = a.estimator, b.estimator
            assert (ea.offset_ns, ea.samples, ea.last_sample_ns, list(ea._mins)) == (
                eb.offset_ns,
                eb.samples,
                eb.last_sample_ns,
                list(eb._mins),
            )
            assert repr(a.health.delay_ewma_ns) == repr(b.health.delay_ewma_ns)


@pytest.mark.parametrize("far", [False, True])
def test_observe_clock_array_equals_observe_clock_run(far):
    """`Feed.observe_clock_array` (a long run's newest times as an int64 array, the offsets back as one) is
    `observe_clock_run`: the offsets, the estimator's state and the delay average to the last bit, on runs that take
    the estimator's array path and runs that do not; `far`: trades stamped centuries ahead on a feed not checked
    for the future, whose delays int64 might not hold (they take Python's ints)."""
    rng = random.Random(far)
    config = StreamConfig(DataSource.BINANCE, ["AAA"])

    def feed(window: int) -> Feed:
        return Feed(
            config, BinanceAdapter(), "ws://x", 0, SourceHealth("x"), OffsetEstimator(window, outlier), frozenset()
        )

    outlier = None if far else 250 * MS  # without the outlier rule, the far samples are taken in

    for window in (8, 64, 512):
        a, b = feed(window), feed(window)
        recv = T0 = 1_700_000_000 * S
        for _ in range(60):
            recv = T0 + rng.randrange(0, 10**6) * MS
            n = rng.choice([1, 5, 31, 32, 100, 512, 600])
            times = [recv - rng.randrange(-5 * MS, 400 * MS) for _ in range(n)]
            if far and rng.random() < 0.3:
                times[rng.randrange(n)] = 2**63 - 1 - rng.randrange(10**6)
            ahead = None if far else rng.choice([None, 10 * MS])
            got = a.observe_clock_array(recv, np.array(times, dtype=np.int64), ahead)
            assert got.dtype == np.int64
            assert got.tolist() == b.observe_clock_run(recv, times, ahead)
            assert list(a.estimator._mins) == list(b.estimator._mins)
            assert (a.estimator.samples, a.estimator.last_sample_ns) == (
                b.estimator.samples,
                b.estimator.last_sample_ns,
            )
            assert repr(a.health.delay_ewma_ns) == repr(b.health.delay_ewma_ns)


def _rfc3339(t_ns: int) -> str:
    sec, frac = divmod(t_ns, S)
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def _crossing_frames(seed: int, n: int = 700) -> list[tuple[int, list[str]]]:
    """Alpaca trade frames whose times jitter around window boundaries (so that a frame's trades of one symbol
    interleave two or three windows), with group sizes on both sides of `_SMALL` (single trades, a few, many),
    occasional bigger jumps (several windows in one frame), and now and then a duplicate or an out-of-order trade
    that sends a frame back to the per-frame path. Each batch is received after its newest trade, as from an
    exchange whose clock runs with ours (one racing ahead sends frames the clock estimator sets aside as stamped
    ahead of it, and those take the per-frame path)."""
    rng = random.Random(seed)
    t_ns, next_id = 1_700_000_000 * S, 1
    frames: list[str] = []
    newest: list[int] = []
    for _ in range(n):
        k = rng.choice([1, 2, 3, 7, 8, 9, 15, 40])
        messages: list[dict[str, Any]] = []
        top = 0
        for _ in range(k):
            t_ns += rng.choice([0, 1000, 3 * MS, 9 * MS, 20 * MS, 20 * MS, 400 * MS if rng.random() < 0.02 else 0])
            t = t_ns + rng.randrange(-15 * MS, 15 * MS)  # jitter: interleaves windows near a boundary
            top = max(top, t)
            tid: Any = next_id
            next_id += 1
            if rng.random() < 0.003:
                tid = rng.randrange(max(1, next_id - 30), next_id)  # a duplicate
            messages.append({"T": "t", "S": rng.choice(SYMBOLS[:2]), "i": tid, "x": "V",
                             "p": round(rng.uniform(10, 11), 4), "s": rng.choice([1, 100, 0.5, rng.uniform(0, 3)]),
                             "t": _rfc3339(t), "c": ["@"], "z": "C"})  # fmt: skip
        frames.append(orjson.dumps(messages).decode())
        newest.append(top)
    batches: list[tuple[int, list[str]]] = []
    i, t_recv = 0, 1_700_000_000 * S
    while i < len(frames):
        k = rng.choice([2, 5, 10, 10, 30])
        t_recv = max(t_recv + rng.randrange(1, 300) * MS, max(newest[i : i + k]) + rng.randrange(1, 20) * MS)
        batches.append((t_recv, frames[i : i + k]))
        i += k
    return batches


CROSSING_CONFIGS = {
    "1s+2s+1m late0": RealtimeConfig(timeframes=["1s", "2s", "1m"], lateness_ms=0, start_timeout_secs=0),
    "1s late30": RealtimeConfig(timeframes=["1s"], lateness_ms=30, start_timeout_secs=0),
    "1s+5s late250": RealtimeConfig(timeframes=["5s", "1s"], lateness_ms=250, start_timeout_secs=0),
}


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", list(CROSSING_CONFIGS))
def test_runs_ending_in_a_crossing_frame_equal_frame_by_frame(seed, name, monkeypatch):
    batches = _crossing_frames(seed)
    config = CROSSING_CONFIGS[name]
    shapes: Counter[str] = Counter()
    add_crossing = RealtimePipeline._add_crossing

    def counting(self: RealtimePipeline, symbol: str, ts: Any, *args: Any) -> None:
        k = args[3]
        for agg in self.aggregators:
            windows = len(set((ts[k:] - ts[k:] % agg.width).tolist()))
            shapes[f"windows={min(windows, 3)}"] += 1
        shapes["small" if len(ts) - k < 8 else "large"] += 1
        shapes["alone" if k == 0 else "after"] += 1
        add_crossing(self, symbol, ts, *args)

    monkeypatch.setattr(RealtimePipeline, "_add_crossing", counting)

    def run(batched: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        p = RealtimePipeline(
            [StreamConfig(DataSource.ALPACA, SYMBOLS[:2], url="ws://127.0.0.1:9")], config, bus=InProcessBus(),
            environ=ENV,
        )  # fmt: skip
        return drive(p, batches, batched)

    one, one_ticks = run(False)
    many, many_ticks = run(True)
    assert one.pop("in_runs") == 0
    assert many.pop("in_runs") > one["accepted"] // 2
    for key in one:
        assert many[key] == one[key], key
    assert many_ticks == one_ticks
    # the crossing frames came in every shape
    for shape in ("windows=2", "small", "large", "alone", "after"):
        assert shapes[shape], (shape, shapes)
    assert any("'final'" in b for b in one["bars"])
