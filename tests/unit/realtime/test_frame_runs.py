"""Runs of multi-trade frames handled as one batch (`RealtimePipeline._on_frames` -> `_ingest_frame_run`: Alpaca's
arrays of trades, what a client that fell behind finds waiting in the connection) give exactly what handling them
one by one (`_on_frame`) gives: bars and their revisions (to the last bit of volume and VWAP), dead letters in
order, dedup, clock offset and delay, buffers, bus entries, health, handover state. Frames with anything but valid
new trades inside the open windows (quotes, bars, control, malformed, bad timestamps, invalid, duplicate, late,
window crossings, standby and catch-up routing) fall back to `_on_frame` inside the batch."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from functools import partial
from typing import Any

import numpy as np
import orjson
import pytest

from gpt_trader.realtime import DataSource
from gpt_trader.realtime.bars import pv_sum, volume_sum
from gpt_trader.realtime.config import RealtimeConfig
from gpt_trader.realtime.sources import alpaca
from gpt_trader.realtime.timestamps import parse_rfc3339_array, parse_rfc3339_ns

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
ENV = {"APCA_API_KEY_ID": "k", "APCA_API_SECRET_KEY": "s"}


def _rfc3339(t_ns: int, digits: int = 9) -> str:
    sec, frac = divmod(t_ns, S)
    text = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{frac:09d}"[: 20 + digits] + "Z" if digits else text + "Z"


def _frames(seed: int, n: int = 900) -> list[tuple[int, list[str]]]:
    """Batches `(recv_ns, frames)` of Alpaca v2 frames of 1..120 trades of two symbols, mostly in order with
    windows crossing every ~1 s, with out-of-order and late trades, duplicates (in and across frames), bad
    prices and sizes, unknown symbols, future and malformed timestamps, bad prints a few seconds ahead, varying
    fraction widths, string ids, quotes, provider bars, control messages and malformed frames."""
    rng = random.Random(seed)
    t_ns, next_id = 1_700_000_000 * S, 1
    frames: list[str] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.02:
            frames.append(rng.choice(["[{not json", '{"T":"t"}', '[{"T":"zz","S":"AAA"}]', "[]"]))
            continue
        if r < 0.03:
            frames.append(orjson.dumps([{"T": "success", "msg": "authenticated"}]).decode())
            continue
        k = rng.choice([1, 2, 5, 7, 8, 9, 20, 50, 100, 120])
        digits = 9 if rng.random() < 0.9 else rng.choice([0, 3, 6])
        faults = 0.06 if rng.random() < 0.3 else 0.0  # most frames are clean
        messages: list[dict[str, Any]] = []
        for _ in range(k):
            t_ns += rng.choice([0, 0, 1000, 17_000, 300_000, 1 * MS, 3 * MS, 3 * MS, 40 * MS if faults else 0])
            sym = rng.choice(SYMBOLS[:2])
            price: Any = round(rng.uniform(10, 11), 4)
            size: Any = rng.choice([1, 100, 0.5, round(rng.uniform(0, 3), 3)])
            tid: Any = next_id
            next_id += 1
            t = t_ns
            stamp: str | None = None
            q = rng.random() if faults else 1.0
            if q < 0.01:
                t = t_ns - rng.randrange(1, 1500) * MS  # out of order: same window, in the lateness, or closed
            elif q < 0.015:
                tid = rng.randrange(max(1, next_id - 40), next_id)  # a duplicate (in the frame, batch or window)
            elif q < 0.018:
                price = rng.choice([0, -1, 1e12])
            elif q < 0.02:
                size = -1
            elif q < 0.022:
                sym = "CCC"  # not subscribed
            elif q < 0.024:
                t = t_ns + 3600 * S  # an hour ahead of the source's clock
            elif q < 0.025:
                t = t_ns + rng.randrange(300, 4900) * MS  # a bad print, within `max_future_secs`
            elif q < 0.026:
                stamp = rng.choice(["2023-13-01T00:00:00.1Z", "yesterday", "2023-11-14T22:13:20.12x4Z"])
            elif q < 0.03:
                tid = f"s{tid}"
            elif q < 0.035:
                messages.append({"T": "q", "S": sym, "bp": price, "ap": price + 0.01, "bs": 1, "as": 2,
                                 "t": _rfc3339(t_ns)})  # fmt: skip
                continue
            elif q < 0.037:
                messages.append({"T": "b", "S": sym, "o": 10, "h": 11, "l": 9, "c": 10.5, "v": 100,
                                 "t": _rfc3339(t_ns - 60 * S, 0), "n": 3, "vw": 10.2})  # fmt: skip
                continue
            messages.append({"T": "t", "S": sym, "i": tid, "x": rng.choice("VVVP"), "p": price, "s": size,
                             "t": stamp or _rfc3339(t, digits), "c": ["@"], "z": "C"})  # fmt: skip
        frames.append(orjson.dumps(messages).decode())
    return batch_frames(frames, rng)


_run = partial(drive_trade_arrays, DataSource.ALPACA, ENV)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_batched_trade_frames_equal_frame_by_frame(seed, name):
    batches = _frames(seed)
    config = CONFIGS[name]
    one, in_runs = batched_vs_frame_by_frame(_run, batches, config)
    assert in_runs > one["accepted"] // 3
    # the scenario exercised what it should
    assert one["accepted"] > 10_000
    reasons = one["by_reason"]
    for reason in ("duplicate", "late", "bad_price", "bad_size", "unknown_symbol", "bad_timestamp"):
        assert reasons.get(reason), (reason, reasons)
    assert one["outliers"]  # bad prints' clock samples set aside (their frames off the batched runs)
    assert reasons.get("malformed_json", 0) + reasons.get("malformed_frame", 0) + reasons.get("invalid_message", 0)
    assert any("'final'" in b for b in one["bars"])
    assert any("'provisional'" in b for b in one["bars"]) or not config.lateness_ms


def test_batched_trade_frames_equal_frame_by_frame_through_failover_and_catchup():
    """Two feeds of the same symbols; the primary drops and comes back: shadows, handover, catch-up, gaps."""
    batches = _frames(7, 1500)
    config = RealtimeConfig(timeframes=["1s"], lateness_ms=100, failback_after_secs=0, start_timeout_secs=0)
    events = {30: (0, "disconnected"), 60: (0, "connected"), 90: (1, "disconnected"), 120: (1, "connected")}
    one, in_runs = batched_vs_frame_by_frame(_run, batches, config, feeds=2, events=events)
    assert in_runs > one["accepted"] // 6
    assert one["accepted"] > 5_000


def test_parse_trade_frames_equals_parse_frame_or_declines():
    raws = [raw for seed in (1, 2) for _, batch in _frames(seed, 400) for raw in batch]
    assert_trade_frames_equal_parse_frame(alpaca, raws)


def test_rfc3339_array_over_several_seconds_equals_scalar():
    rng = random.Random(11)
    for _ in range(300):
        base = rng.randrange(1_500_000_000, 1_800_000_000) * S
        step = rng.choice([1000, MS, 50 * MS, S, 7 * S])
        digits = rng.randrange(1, 10)
        texts = [_rfc3339(base + i * step + rng.randrange(0, 1000), digits) for i in range(rng.randrange(8, 400))]
        if rng.random() < 0.2:
            texts[rng.randrange(len(texts))] = rng.choice(["2023-13-01T00:00:00.1Z", texts[0][:-2] + "xZ"])
        try:
            got: Any = parse_rfc3339_array(texts).tolist()
        except ValueError:
            got = "error"
        try:
            exp: Any = [parse_rfc3339_ns(t) for t in texts]
        except ValueError:
            exp = "error"
        assert got == exp


def test_segment_sums_equal_reduceat_segments():
    """The batched path sums many frames' trades with one `np.add.reduceat`; each segment must equal the frame's
    own sum as `_aggregate` computes it (`volume_sum`, `pv_sum`), bit for bit, wherever the segment lies."""
    rng = np.random.default_rng(2)
    for _ in range(300):
        n = int(rng.integers(1, 3000))
        px = rng.uniform(10, 11, n) * rng.choice([1.0, 1e-3, 1e4])
        sz = rng.uniform(0, 3, n) * rng.choice([1.0, 1e-3, 1e5])
        cuts = np.sort(rng.choice(np.arange(1, n + 1), size=min(n, int(rng.integers(1, 40))), replace=False))
        firsts = [0, *cuts[:-1].tolist()] if cuts[-1] == n else [0, *cuts.tolist()]
        firsts = sorted(set(firsts))
        vols = np.add.reduceat(sz, firsts).tolist()
        pvs = np.add.reduceat(px * sz, firsts).tolist()
        for j, a in enumerate(firsts):
            b = firsts[j + 1] if j + 1 < len(firsts) else n
            assert vols[j] == volume_sum(sz[a:b].copy())
            assert pvs[j] == pv_sum(px[a:b].copy(), sz[a:b].copy())
