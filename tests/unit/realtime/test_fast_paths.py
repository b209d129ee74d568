"""The hot path's fast versions equal the plain ones: vectorized RFC 3339 parsing, the aggregator's one-window
summary and single-trade paths, chunked dedup eviction, staged single-row buffer writes, and the pipeline's
array path against its list path."""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque

import numpy as np
import pytest

from gpt_trader.realtime import DataSource, RealtimePipeline, StreamConfig
from gpt_trader.realtime.bars import BarAggregator, pv_sum, volume_sum
from gpt_trader.realtime.buffer import BufferOverflowError, TickRing
from gpt_trader.realtime.bus import InProcessBus
from gpt_trader.realtime.config import RealtimeConfig
from gpt_trader.realtime.models import ParsedFrame
from gpt_trader.realtime.pipeline import _Dedup
from gpt_trader.realtime.sources import alpaca
from gpt_trader.realtime.timestamps import parse_rfc3339_array, parse_rfc3339_batch, parse_rfc3339_ns

S = 1_000_000_000


def _scalar(texts: list[str]) -> list[int]:
    return [parse_rfc3339_ns(t) for t in texts]


@pytest.mark.parametrize("digits", range(1, 10))
def test_rfc3339_array_same_second_each_fraction_width_equals_scalar(digits):
    rng = random.Random(digits)
    texts = [f"2021-02-22T15:51:44.{rng.randrange(10**digits):0{digits}d}Z" for _ in range(50)]
    texts += [f"2021-02-22T15:51:44.{'0' * digits}Z", f"2021-02-22T15:51:44.{'9' * digits}Z"]
    expected = _scalar(texts)
    assert parse_rfc3339_array(texts).tolist() == expected
    assert parse_rfc3339_batch(texts) == expected


@pytest.mark.parametrize(
    "texts",
    [
        # no fraction, mixed widths, several seconds, offsets: the per-string loop (still equal to the scalar parse)
        [f"2021-02-22T15:51:{s:02d}Z" for s in range(10)],
        [f"2021-02-22T15:51:44.{'5' * (1 + k % 9)}Z" for k in range(12)],
        [f"2021-02-22T15:51:{44 + k % 3}.{k:09d}Z" for k in range(12)],
        [f"2021-02-22T15:51:44.{k:09d}+00:00" for k in range(12)],
        [f"2021-02-22T17:51:44.{k:06d}+02:00" for k in range(12)],
        ["2021-02-22T15:51:44.123456789012Z"] * 9,  # more than 9 digits: nanoseconds kept
        ["2021-02-22t15:51:44.1z"] * 8,
        [f"2021-12-31T23:59:59.{k:03d}Z" for k in range(995, 1000)]
        + [f"2022-01-01T00:00:00.{k:03d}Z" for k in range(5)],
    ],
)
def test_rfc3339_array_edge_cases_equal_scalar(texts):
    expected = _scalar(texts)
    assert parse_rfc3339_array(texts).tolist() == expected
    assert parse_rfc3339_batch(texts) == expected
    assert parse_rfc3339_array(texts).dtype == np.int64


@pytest.mark.parametrize(
    "bad",
    ["2021-02-22T15:51:44.12a456789Z", "2021-02-22T15:51:44.123456789", "2021-02-22X15:51:44.123456789Z", "garbage"],
)
def test_rfc3339_array_bad_timestamp_raises_like_scalar(bad):
    texts = [f"2021-02-22T15:51:44.{k:09d}Z" for k in range(20)]
    texts[7] = bad
    with pytest.raises(ValueError, match=r"timestamp|fraction"):
        parse_rfc3339_ns(bad)
    with pytest.raises((ValueError, IndexError)):
        parse_rfc3339_array(texts)


def test_alpaca_parse_frame_sets_ts_array_equal_to_list():
    msgs = [
        {"T": "t", "S": "AAPL", "i": k, "x": "V", "p": 100.0 + k, "s": 1.0, "t": f"2021-02-22T15:51:44.{k:09d}Z"}
        for k in range(20)
    ]
    import json

    frame = alpaca.parse_frame(json.dumps(msgs))
    assert frame.t_ts_array is not None
    assert frame.t_ts_array.tolist() == frame.t_ts == _scalar([m["t"] for m in msgs])


def _bars(agg: BarAggregator, symbol: str) -> list[tuple]:
    return [
        (b.ts_ns, b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trades, b.revision, b.status)
        for b in agg.flush(symbol, 0)
    ]


def test_aggregator_add_run_equals_add_including_ties_and_late():
    rng = np.random.default_rng(3)
    a, b = BarAggregator("1s", 0), BarAggregator("1s", 0)
    for k in range(30):
        n = 8 + k
        ts = np.sort(rng.integers(k * S, k * S + S // 2, n))
        ts[-2:] = ts[-1]  # ties at the close: the later arrival closes
        ts[1] = ts[0]  # ties at the open: the first arrival opens
        px = rng.uniform(10, 20, n)
        sz = rng.uniform(0, 5, n)
        assert a.add("X", ts, px, sz, "f") == []
        i_min, i_close = int(ts.argmin()), n - 1 - int(ts[::-1].argmax())
        ok = b.add_run(
            "X", int(ts[i_min]), float(px[i_min]), int(ts.max()), float(px[i_close]), float(px.max()),
            float(px.min()), volume_sum(sz), pv_sum(px, sz), n, "f",
        )  # fmt: skip
        assert ok
        a.advance("X", None, 0)
        b.advance("X", None, 0)
    # a run for a window already final: all late, the frontier still moves
    late = a.add("X", np.full(8, 2 * S), np.ones(8), np.ones(8), "f")
    assert not b.add_run("X", 2 * S, 1.0, 2 * S, 1.0, 1.0, 1.0, 8.0, 8.0, 8, "f")
    assert late == list(range(8))
    assert vars(a.counters) == vars(b.counters)
    assert _bars(a, "X") == _bars(b, "X")


def test_aggregator_add_one_equals_small_path():
    rng = random.Random(5)
    a, b = BarAggregator("1s", 200_000_000), BarAggregator("1s", 200_000_000)
    t = 0
    for _ in range(500):
        t += rng.randrange(-50_000_000, 30_000_000)  # out of order, some late
        t = max(t, 0)
        p, z = rng.uniform(1, 2), rng.uniform(0, 3)
        late = a.add("X", [t], [p], [z], "f")
        assert (late == []) == b.add_one("X", t, p, z, "f")
        assert [x.ts_ns for x in a.advance("X", None, 0)] == [x.ts_ns for x in b.advance("X", None, 0)]
    assert vars(a.counters) == vars(b.counters)
    assert _bars(a, "X") == _bars(b, "X")


class _ReferenceDedup:
    """The original per-id implementation."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.seen, self.order = capacity, set(), deque()

    def fresh(self, ids):
        keep, batch = [], set()
        for i, x in enumerate(ids):
            if x not in self.seen and x not in batch:
                batch.add(x)
                keep.append(i)
        new = [ids[i] for i in keep]
        self.seen.update(new)
        self.order.extend(new)
        while len(self.order) > self.capacity:
            self.seen.discard(self.order.popleft())
        return None if len(keep) == len(ids) else keep


@pytest.mark.parametrize("capacity", [1, 7, 100])
def test_dedup_chunked_eviction_equals_per_id(capacity):
    rng = random.Random(capacity)
    ref, fast = _ReferenceDedup(capacity), _Dedup(capacity)
    for _ in range(400):
        ids = [rng.randrange(300) for _ in range(rng.randrange(0, 15))]
        assert fast.fresh(ids) == ref.fresh(ids)
        assert fast.seen == ref.seen
        assert fast.size == len(ref.order) <= capacity


def _row(k: int) -> tuple:
    return (k, k + 1, k + 2, k + 0.5, 1.0, math.nan, 2.0, 3.0, 4.0, 0)


@pytest.mark.parametrize("policy", ["overwrite", "drop_newest"])
@pytest.mark.parametrize("capacity", [3, 300, 1000])
def test_ring_write_row_equals_one_event_writes(policy, capacity):
    names = ["ts_event", "ts_init", "ts_corrected", "price", "size", "bid", "ask", "bid_size", "ask_size", "kind"]
    staged, reference = TickRing(capacity, policy), TickRing(capacity, policy)
    rng = random.Random(capacity)
    k = 0
    for step in range(700):
        n = rng.choice([1, 1, 1, 1, 2, 17])
        rows = [_row(k + j) for j in range(n)]
        k += n
        if n == 1:
            assert staged.write_row(*rows[0]) == _write_one_by_one(reference, names, rows[0])
        else:
            cols = {c: np.array([r[j] for r in rows]) for j, c in enumerate(names)}
            assert staged.write(n, cols) == reference.write(n, cols)
        if step % 97 == 0 or step == 699:
            a, b = staged.snapshot(), reference.snapshot()
            assert all(np.array_equal(a[c], b[c], equal_nan=True) for c in names)
            assert vars(staged.counters) == vars(reference.counters)
            assert len(staged) == len(reference)


def _write_one_by_one(ring: TickRing, names: list[str], row: tuple) -> int:
    """One event through the multi-row path (two writes of a doubled row would change counters, so a slice)."""
    free = ring.capacity - ring._size
    if free == 0 and ring.policy != "overwrite":
        ring.counters.dropped += 1
        return 0
    cols = ring.columns
    head = ring._head
    for c, v in zip(names, row, strict=True):
        cols[c][head] = v
    ring.counters.overwritten += ring._size == ring.capacity
    ring._head = (head + 1) % ring.capacity
    ring._size = min(ring.capacity, ring._size + 1)
    ring.counters.written += 1
    return 1


def test_ring_write_row_raise_policy_and_bad_width():
    ring = TickRing(2, "raise")
    ring.write_row(*_row(0))
    ring.write_row(*_row(1))
    with pytest.raises(BufferOverflowError):
        ring.write_row(*_row(2))
    with pytest.raises(ValueError, match="a row has 10 values"):
        ring.write_row(1, 2, 3)
    assert ring.snapshot()["ts_event"].tolist() == [0, 1]


def _pipeline() -> RealtimePipeline:
    config = RealtimeConfig(timeframes=["1s", "1m"], lateness_ms=0, start_timeout_secs=0, buffer_size=1000)
    env = {"APCA_API_KEY_ID": "k", "APCA_API_SECRET_KEY": "s"}
    return RealtimePipeline(
        [StreamConfig(DataSource.ALPACA, ["AAA", "BBB"], url="ws://127.0.0.1:9")],
        config,
        bus=InProcessBus(),
        environ=env,
    )


def _frames(seed: int) -> list[ParsedFrame]:
    """Frames of interleaved symbols with duplicates, bad trades, late trades and window crossings."""
    rng = random.Random(seed)
    frames, t, next_id = [], 10 * S, 0
    for _ in range(60):
        f = ParsedFrame()
        for _ in range(rng.choice([1, 3, 9, 40, 100])):
            t += rng.randrange(-20_000_000, 30_000_000)
            sym = rng.choice(["AAA", "BBB", "AAA", "CCC"] if rng.random() < 0.05 else ["AAA", "BBB"])
            price = rng.choice([rng.uniform(10, 11)] * 30 + [math.nan, -1.0])
            tid = next_id if rng.random() > 0.05 else rng.randrange(max(1, next_id))
            next_id += 1
            f.add_trade(sym, t, price, rng.uniform(0, 5), tid)
        frames.append(f)
    return frames


def _run(frames: list[ParsedFrame], arrays: bool) -> tuple:
    async def go() -> tuple:
        p = _pipeline()
        await p._build_feeds()
        feed = p.feeds[0]
        feed.health.connected = True
        if not arrays:
            import gpt_trader.realtime.pipeline as mod

            small = mod._SMALL
            mod._SMALL = 10**9  # force the list path everywhere
        try:
            for k, f in enumerate(frames):
                g = ParsedFrame(list(f.t_symbol), list(f.t_ts), list(f.t_price), list(f.t_size), list(f.t_id))
                if arrays and k % 2:
                    g.t_ts_array = np.array(g.t_ts, dtype=np.int64)
                p._ingest_trades(feed, g, 20 * S + k)
        finally:
            if not arrays:
                mod._SMALL = small
        bars = {
            (sym, tf): p.get_bars(sym, tf).drop(columns=["vwap"]).to_dict("list")
            for sym in ("AAA", "BBB")
            for tf in ("1s", "1m")
        }
        live = {sym: p.get_live_data(sym).drop(columns=["ts_init"]).to_dict("list") for sym in ("AAA", "BBB")}
        letters = [(d.reason, d.raw) for d in p.dead_letters.recent]
        return p.ticks_accepted, p.dead_letters.by_reason(), bars, live, letters

    return asyncio.run(go())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pipeline_array_path_equals_list_path(seed):
    frames = _frames(seed)
    fast, plain = _run(frames, True), _run(frames, False)
    assert fast[0] == plain[0] > 0
    assert fast[1] == plain[1]
    assert fast[1].get("duplicate")
    assert fast[1].get("bad_price")
    for key in fast[2]:
        a, b = fast[2][key], plain[2][key]
        assert {k: v for k, v in a.items() if k not in ("volume",)} == {
            k: v for k, v in b.items() if k not in ("volume",)
        }
        assert a["volume"] == pytest.approx(b["volume"], rel=1e-12)
    for sym in fast[3]:
        a, b = fast[3][sym], plain[3][sym]
        assert a.keys() == b.keys()
        for k in a:
            assert [str(x) for x in a[k]] == [str(x) for x in b[k]], k
    assert fast[4] == plain[4]
