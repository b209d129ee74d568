"""Polygon's arrays of trades take the same batched run path as Alpaca's (`parse_trade_frames` ->
`_ingest_frame_run`): handling a batch of frames as runs gives exactly what `_on_frame` one by one gives, and the
batched parser equals `parse_frame` frame by frame or declines the frame."""

from __future__ import annotations

import random
from functools import partial
from typing import Any

import orjson
import pytest

from gpt_trader.realtime import DataSource
from gpt_trader.realtime.config import RealtimeConfig
from gpt_trader.realtime.sources import polygon

from .test_frame_batches import (
    CONFIGS,
    SYMBOLS,
    assert_trade_frames_equal_parse_frame,
    batch_frames,
    batched_vs_frame_by_frame,
    drive_trade_arrays,
)

S = 1_000_000_000
MS = 1_000_000
ENV = {"POLYGON_API_KEY": "k"}


def _frames(seed: int, n: int = 900) -> list[tuple[int, list[str]]]:
    """Batches `(recv_ns, frames)` of Polygon frames of 1..120 trades of two symbols, mostly in order with windows
    crossing every ~1 s, with out-of-order and late trades, duplicates (in and across frames), bad prices and
    sizes, unknown symbols, future and out-of-range timestamps, int ids, quotes, aggregates, status messages and
    malformed frames."""
    rng = random.Random(seed)
    t_ms, next_id = 1_700_000_000_000, 1
    frames: list[str] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.02:
            frames.append(rng.choice(["[{not json", '{"ev":"T"}', '[{"ev":"zz","sym":"AAA"}]', "[]", "[1]"]))
            continue
        if r < 0.03:
            frames.append(orjson.dumps([{"ev": "status", "status": "success", "message": "subscribed"}]).decode())
            continue
        k = rng.choice([1, 2, 5, 7, 8, 9, 20, 50, 100, 120])
        faults = 0.06 if rng.random() < 0.3 else 0.0
        messages: list[dict[str, Any]] = []
        for _ in range(k):
            t_ms += rng.choice([0, 0, 1, 1, 3, 3, 5, 40 if faults else 0])
            sym = rng.choice(SYMBOLS[:2])
            price: Any = round(rng.uniform(10, 11), 4)
            size: Any = rng.choice([1, 100, 0.5, round(rng.uniform(0, 3), 3)])
            tid: Any = str(next_id)
            next_id += 1
            t = t_ms
            q = rng.random() if faults else 1.0
            if q < 0.01:
                t = t_ms - rng.randrange(1, 1500)  # out of order: same window, in the lateness, or closed
            elif q < 0.015:
                tid = str(rng.randrange(max(1, next_id - 40), next_id))  # a duplicate
            elif q < 0.018:
                price = rng.choice([0, -1, 1e12])
            elif q < 0.02:
                size = -1
            elif q < 0.022:
                sym = "CCC"  # not subscribed
            elif q < 0.024:
                t = t_ms + 3_600_000  # an hour ahead of the source's clock
            elif q < 0.025:
                t = rng.choice([2**62, -(2**62), 2**64 - 1])  # nanoseconds do not fit in int64
            elif q < 0.03:
                tid = next_id * 7  # an int id
            elif q < 0.035:
                messages.append({"ev": "Q", "sym": sym, "bp": price, "ap": price + 0.01, "bs": 1, "as": 2, "t": t_ms})
                continue
            elif q < 0.037:
                messages.append({"ev": "AM", "sym": sym, "o": 10, "h": 11, "l": 9, "c": 10.5, "v": 100,
                                 "s": t_ms - 60_000, "e": t_ms, "vw": 10.2})  # fmt: skip
                continue
            messages.append({"ev": "T", "sym": sym, "x": rng.choice([4, 4, 11]), "i": tid, "z": 3, "p": price,
                             "s": size, "c": [0], "t": t, "q": next_id})  # fmt: skip
        frames.append(orjson.dumps(messages).decode())
    return batch_frames(frames, rng)


_run = partial(drive_trade_arrays, DataSource.POLYGON, ENV)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_batched_polygon_frames_equal_frame_by_frame(seed, name):
    batches = _frames(seed)
    config = CONFIGS[name]
    one, in_runs = batched_vs_frame_by_frame(_run, batches, config)
    assert in_runs > one["accepted"] // 3
    assert one["accepted"] > 10_000
    reasons = one["by_reason"]
    for reason in ("duplicate", "late", "bad_price", "bad_size", "unknown_symbol", "bad_timestamp"):
        assert reasons.get(reason), (reason, reasons)
    assert any("'final'" in b for b in one["bars"])


def test_batched_polygon_frames_equal_frame_by_frame_through_failover_and_catchup():
    batches = _frames(7, 1500)
    config = RealtimeConfig(timeframes=["1s"], lateness_ms=100, failback_after_secs=0, start_timeout_secs=0)
    events = {30: (0, "disconnected"), 60: (0, "connected"), 90: (1, "disconnected"), 120: (1, "connected")}
    one, in_runs = batched_vs_frame_by_frame(_run, batches, config, feeds=2, events=events)
    assert in_runs > one["accepted"] // 6


def test_polygon_parse_trade_frames_equals_parse_frame_or_declines():
    raws = [raw for seed in (1, 2, 3) for _, batch in _frames(seed, 400) for raw in batch]
    assert_trade_frames_equal_parse_frame(polygon, raws)


def test_polygon_trade_time_out_of_range_is_a_bad_timestamp_not_a_crash():
    """A millisecond time whose nanoseconds do not fit in int64 is refused as a bad timestamp (the pipeline keeps
    nanoseconds in int64 columns); the frame's other trades are kept."""
    raw = orjson.dumps(
        [
            {"ev": "T", "sym": "AAA", "x": 4, "i": "1", "p": 10.0, "s": 1, "t": 2**62},
            {"ev": "T", "sym": "AAA", "x": 4, "i": "2", "p": 10.5, "s": 2, "t": 1_700_000_000_000},
        ]
    ).decode()
    frame = polygon.parse_frame(raw)
    assert [r.reason for r in frame.rejects] == ["bad_timestamp"]
    assert frame.t_ts == [1_700_000_000_000 * MS]
    assert frame.t_price == [10.5]
    assert polygon.parse_trade_frames([raw], 0) is None  # not a plain trade frame: the per-frame path takes it
