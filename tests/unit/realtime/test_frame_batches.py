"""Frames handled as a batch (`RealtimePipeline._on_frames`: what a client that fell behind finds waiting in the
connection) give exactly what handling them one by one (`_on_frame`) gives: bars and their revisions, dead letters
in order, dedup, clock offset and delay, buffers, bus entries, health, handover state. Binance one-trade frames take
the batched run paths (`parse_trade_frames`, then `_ingest_trade_run` or, for long runs, `_ingest_frame_run`);
everything else (quotes, klines, control, malformed, invalid, duplicate, late, window crossings, standby and
catch-up routing) falls back to `_on_frame` inside the batch."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson
import pytest

from gpt_trader.realtime import DataSource, RealtimePipeline, StreamConfig
from gpt_trader.realtime.bars import BarAggregator
from gpt_trader.realtime.bus import InProcessBus
from gpt_trader.realtime.config import RealtimeConfig
from gpt_trader.realtime.models import TradeFrames
from gpt_trader.realtime.pipeline import LatencyRecorder
from gpt_trader.realtime.sources import binance

S = 1_000_000_000
MS = 1_000_000
SYMBOLS = ["AAA", "BBB", "CCC"]


def _trade(sym: str, t_ms: int, price: Any, size: Any, tid: int) -> str:
    return (
        f'{{"stream":"{sym.lower()}@trade","data":{{"e":"trade","E":{t_ms},"s":"{sym}","t":{tid},"p":"{price}",'
        f'"q":"{size}","T":{t_ms},"m":false,"M":true}}}}'
    )


def _frames(seed: int, n: int = 1500) -> list[tuple[int, list[str]]]:
    """Batches `(recv_ns, frames)` of a Binance combined stream: mostly in-order trades of two symbols (windows
    cross every ~1 s), with out-of-order and late trades, duplicates, bad prices and sizes, unknown symbols, future
    timestamps, quotes, closed klines, control replies, malformed frames and unknown streams."""
    rng = random.Random(seed)
    t_ms, next_id = 1_700_000_000_000, 1
    frames: list[str] = []
    for _ in range(n):
        t_ms += rng.choice([0, 0, 1, 2, 5, 15, 40])
        sym = rng.choice(SYMBOLS[:2])
        price, size = f"{rng.uniform(10, 11)!r}", f"{rng.choice([0.001, 0.01, 1.0, rng.uniform(0, 3)])!r}"
        tid, t = next_id, t_ms
        next_id += 1
        r = rng.random()
        if r < 0.05:
            t = t_ms - rng.randrange(1, 1500)  # out of order: same window, past the lateness, or a closed window
        elif r < 0.08:
            tid = rng.randrange(1, next_id)  # a duplicate (or a repeat inside the batch)
        elif r < 0.09:
            price = rng.choice(["0", "-1", "nan", "1e12"])
        elif r < 0.10:
            size = "-1"
        elif r < 0.11:
            sym = "CCC"  # not subscribed
        elif r < 0.12:
            t = t_ms + 3_600_000  # an hour ahead of the source's clock
        elif r < 0.14:
            frames.append(
                f'{{"stream":"{sym.lower()}@bookTicker","data":{{"u":{tid},"s":"{sym}","b":"{price}","B":"1.0",'
                f'"a":"{float(price) + 0.01!r}","A":"2.0"}}}}'
            )
            continue
        elif r < 0.145:
            frames.append(orjson.dumps({"result": None, "id": tid}).decode())
            continue
        elif r < 0.15:
            frames.append(rng.choice(["{not json", '{"stream":"x@trade","data":{"s":"AAA"}}', "[1,2]"]))
            continue
        elif r < 0.155:
            frames.append(f'{{"stream":"{sym.lower()}@depth","data":{{}}}}')
            continue
        elif r < 0.16:
            frames.append(
                orjson.dumps(
                    {
                        "stream": f"{sym.lower()}@kline_1m",
                        "data": {
                            "e": "kline",
                            "s": sym,
                            "k": {
                                "t": t_ms - 60_000,
                                "s": sym,
                                "i": "1m",
                                "o": "10",
                                "h": "11",
                                "l": "9",
                                "c": "10.5",
                                "v": "3",
                                "n": 3,
                                "x": True,
                                "q": "31",
                            },
                        },
                    }
                ).decode()
            )
            continue
        frames.append(_trade(sym, t, price, size, tid))
    batches: list[tuple[int, list[str]]] = []
    i, t_recv = 0, 1_700_000_000_000 * MS
    while i < len(frames):
        k = rng.choice([1, 1, 2, 3, 8, 30, 64, 200])
        t_recv += rng.randrange(1, 60) * MS
        batches.append((t_recv, frames[i : i + k]))
        i += k
    return batches


def _pipeline(config: RealtimeConfig, feeds: int = 1) -> RealtimePipeline:
    streams = [StreamConfig(DataSource.BINANCE, SYMBOLS[:2], url=f"ws://127.0.0.1:{9 + k}") for k in range(feeds)]
    return RealtimePipeline(streams, config, bus=InProcessBus())


def _state(p: RealtimePipeline, bars: list[Any]) -> dict[str, Any]:
    def clean(x: Any) -> Any:
        return repr(x)  # NaN-safe, exact floats

    out: dict[str, Any] = {
        "accepted": p.ticks_accepted,
        "bars": [clean(b) for b in bars],
        "letters": [(d.source, d.reason, d.detail, d.raw, d.wall_ns) for d in p.dead_letters.recent],
        "by_reason": p.dead_letters.by_reason(),
        "entries": clean(p._pending_entries),
        "last_active": clean(p._last_active_ts),
        "last_price": clean(p._last_price),
        "last_wall": clean(p._last_trade_wall),
        "recent": clean({s: list(d) for s, d in p._recent_active.items()}),
        "active": {s: f.name if f else None for s, f in p._active.items()},
        "catchup": dict(p._catchup),
        "quotes": clean(p._quote_state),
        "latency_n": (p.latency.count, p.exchange_latency.count),
        "counts": dict(p._tick_counts),
    }
    for f in p.feeds:
        h, e = f.health, f.estimator
        out[f"feed:{f.name}"] = clean(
            (h.messages, h.ticks, h.rejects, h.last_message_ns, h.delay_ewma_ns, h.last_price, e.offset_ns,
             e.samples, e.last_sample_ns, list(e._mins), e.outliers, e._early, e._early_run, e.provisional,
             e.first_dropped, e._first, e._late_run, {s: list(sh.ticks) for s, sh in f.shadows.items()})
        )  # fmt: skip
        out[f"clock:{f.name}"] = (e.offset_ns, e.first_dropped, e.provisional)
    for sym in SYMBOLS[:2]:
        out[f"seen:{sym}"] = sorted(p._dedup[sym].seen)
        out[f"ring:{sym}"] = clean({k: v.tolist() for k, v in p._buffers[sym].snapshot().items()})
        out[f"ringc:{sym}"] = vars(p._buffers[sym].counters)
        for agg in p.aggregators:
            out[f"open:{agg.label}:{sym}"] = clean(sorted(agg._open.get(sym, {}).items()))
    out["outliers"] = sum(f.estimator.outliers for f in p.feeds)
    for agg in p.aggregators:
        out[f"agg:{agg.label}"] = (vars(agg.counters), clean(agg._max_event), clean(agg._final_before))
    return out


def _flat_ticks(p: RealtimePipeline) -> dict[str, tuple[list[Any], ...]]:
    """The pending ticks per symbol as flat columns (how they are published), whatever the batching."""
    out: dict[str, tuple[list[Any], ...]] = {}
    for sym, parts in p._pending_ticks.items():
        cols: tuple[list[Any], ...] = ([], [], [], [], [])
        for ts, px, sz, recv, name in parts:
            cols[0].extend(list(ts))
            cols[1].extend(list(px))
            cols[2].extend(list(sz))
            cols[3].extend([recv] * len(ts))
            cols[4].extend([name] * len(ts))
        out[sym] = cols
    return out


def batch_frames(frames: list[str], rng: random.Random) -> list[tuple[int, list[str]]]:
    """Frames grouped as a client finds them queued in its connection: 1 to 40 at a time, 1-300 ms apart."""
    batches: list[tuple[int, list[str]]] = []
    i, t_recv = 0, 1_700_000_000 * S
    while i < len(frames):
        k = rng.choice([1, 2, 3, 10, 10, 19, 40])
        t_recv += rng.randrange(1, 300) * MS
        batches.append((t_recv, frames[i : i + k]))
        i += k
    return batches


def batched_vs_frame_by_frame(
    run: Callable[..., tuple[dict[str, Any], dict[str, Any]]],
    batches: list[tuple[int, list[str]]],
    config: RealtimeConfig,
    **options: Any,
) -> tuple[dict[str, Any], int]:
    """`run` the batches frame by frame and batched; assert the same outcome (every state field, every tick) and
    that frame by frame committed no run. Returns the frame-by-frame state and the trades that went in runs."""
    one, one_ticks = run(batches, config, batched=False, **options)
    many, many_ticks = run(batches, config, batched=True, **options)
    assert many.keys() == one.keys()
    assert one.pop("in_runs") == 0
    in_runs = many.pop("in_runs")
    for key in one:
        assert many[key] == one[key], key
    assert many_ticks == one_ticks
    return one, in_runs


def _listed(column: Any) -> list[Any]:
    """A `TradeFrames` column (numpy array or list) as a list of Python scalars."""
    return column.tolist() if isinstance(column, np.ndarray) else list(column)


def _assert_numbered(frames: Any) -> None:
    """Where the parser numbered the symbols (the compiled scanner), by first appearance, as `_symbol_runs` does."""
    if frames.codes is not None:
        assert frames.names == list(dict.fromkeys(frames.symbol))
        assert [frames.names[c] for c in frames.codes.tolist()] == frames.symbol


@pytest.mark.parametrize("n_symbols", [1, 3, 8, 9, 40])
def test_from_frame_numbers_the_rest_by_first_appearance(n_symbols):
    """A run's tail keeps its symbols numbered (by first appearance in the tail), with few symbols or many."""
    rng = random.Random(n_symbols)
    names = [f"S{k}" for k in range(n_symbols)]
    for _ in range(50):
        counts = [rng.choice([1, 1, 2, 5]) for _ in range(rng.randrange(1, 60))]
        symbol = [rng.choice(names[: rng.randrange(1, n_symbols + 1)]) for _ in range(sum(counts))]
        distinct = list(dict.fromkeys(symbol))
        codes = np.array([distinct.index(x) for x in symbol], dtype=np.intp)
        n = len(symbol)
        frames = TradeFrames(3, counts, symbol, np.arange(n), np.ones(n), np.ones(n), list(range(n)), codes, distinct)
        for k in range(1, len(counts)):
            tail = frames.from_frame(3 + k)
            assert tail is not None
            assert tail.symbol == symbol[sum(counts[:k]) :]
            assert tail.codes is not None
            _assert_numbered(tail)


def assert_trade_frames_equal_parse_frame(adapter: Any, raws: list[Any]) -> None:
    """`adapter.parse_trade_frames` (Alpaca, Polygon, Binance) against `adapter.parse_frame` from every start: each
    run holds exactly the plain trade frames there (frames of well-formed trades whose ns times fit int64), column for
    column, also as `parsed` hands them back; it stops at the first other frame, `from_frame` is its tail, and a
    start that is not a plain trade frame gets None."""
    i = 0
    while i < len(raws):
        got = adapter.parse_trade_frames(raws, i)
        frame = adapter.parse_frame(raws[i])
        plain = frame.n_trades > 0 and not (frame.rejects or frame.control or frame.q_ts or frame.bars)
        plain = plain and all(-(2**63) <= t < 2**63 for t in frame.t_ts)
        if got is None:
            assert not plain, raws[i]
            i += 1
            continue
        assert got.start == i
        m = 0
        for k, count in enumerate(got.counts):
            frame = adapter.parse_frame(raws[i + k])
            assert not frame.rejects
            assert not frame.control
            assert not frame.q_ts
            assert not frame.bars
            assert frame.n_trades == count
            assert frame.t_symbol == got.symbol[m : m + count]
            assert frame.t_ts == _listed(got.ts[m : m + count])
            assert repr(frame.t_price) == repr(_listed(got.price[m : m + count]))
            assert repr(frame.t_size) == repr(_listed(got.size[m : m + count]))
            assert frame.t_id == got.ids[m : m + count]
            again = got.parsed(i + k)  # the per-frame path's view of it, without decoding again
            assert (again.t_symbol, again.t_ts, again.t_id) == (frame.t_symbol, frame.t_ts, frame.t_id)
            assert repr((again.t_price, again.t_size)) == repr((frame.t_price, frame.t_size))
            m += count
        if got.end < len(raws):  # the run stops at the first frame that is not plain trades
            frame = adapter.parse_frame(raws[got.end])
            assert frame.n_trades == 0 or frame.rejects or frame.control or frame.q_ts or frame.bars
        tail = got.from_frame(got.start + 1)
        _assert_numbered(got)
        if len(got.counts) > 1:
            assert tail is not None
            assert tail.start == i + 1
            assert tail.counts == got.counts[1:]
            assert _listed(tail.ts) == _listed(got.ts[got.counts[0] :])
            assert tail.symbol == got.symbol[got.counts[0] :]
            _assert_numbered(tail)
            assert (tail.codes is None) == (got.codes is None)
        else:
            assert tail is None
        i = got.end


# The pipeline's run-commit methods, with the index of the argument that holds a run's trades.
RUN_COMMITS = (("_commit_run", 3), ("_commit_frame_run", 4))


def drive_trade_arrays(
    source: DataSource,
    environ: dict[str, str],
    batches: list[tuple[int, list[str]]],
    config: RealtimeConfig,
    batched: bool,
    feeds: int = 1,
    events: dict[int, tuple[int, str]] | None = None,
    runs: Sequence[tuple[str, int]] = RUN_COMMITS,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Trade frames (Alpaca, Polygon, Binance) of `feeds` feeds on the first two symbols through `drive`, counting
    the trades of `runs`."""
    streams = [
        StreamConfig(source, SYMBOLS[:2], url=f"ws://127.0.0.1:{9 + k}", name=f"{source.value}{k}")
        for k in range(feeds)
    ]
    p = RealtimePipeline(streams, config, bus=InProcessBus(), environ=environ)
    return drive(p, batches, batched, runs, events)


def drive(
    p: RealtimePipeline,
    batches: list[tuple[int, list[str]]],
    batched: bool,
    runs: Sequence[tuple[str, int]] = RUN_COMMITS,
    events: dict[int, tuple[int, str]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Feed every batch to the pipeline's feeds in turn (feed 0 alone when there is one), either as one
    `_on_frames` call or frame by frame; `events` maps a batch index to (feed index, state) applied before it
    (failover). `runs` names the pipeline's run-commit methods and which of their arguments holds the trades: the
    state gains `in_runs`, how many trades went through them."""

    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        wall = [0]
        p._now_ns = lambda: wall[0]
        await p._build_feeds()
        for f in p.feeds:
            f.health.connected = True
        bars: list[Any] = []
        p.add_bar_listener(bars.append)
        in_runs = [0]

        def counting(commit: Callable[..., Any], arg: int) -> Callable[..., Any]:
            def count(*args: Any) -> Any:
                in_runs[0] += len(args[arg])
                return commit(*args)

            return count

        for attr, arg in runs:
            setattr(p, attr, counting(getattr(p, attr), arg))
        feeds = len(p.configs)
        for k, (recv_ns, raws) in enumerate(batches):
            wall[0] = recv_ns
            if events and k in events:
                idx, state = events[k]
                p._on_state(p.feeds[idx], state)
            target = p.feeds[k % feeds] if feeds > 1 else p.feeds[0]
            if batched:
                await p._on_frames(target, raws, recv_ns)
            else:
                for raw in raws:
                    await p._on_frame(target, raw, recv_ns)
        state = _state(p, bars)
        state["in_runs"] = in_runs[0]
        return state, _flat_ticks(p)

    return asyncio.run(go())


def _run(
    batches: list[tuple[int, list[str]]],
    config: RealtimeConfig,
    batched: bool,
    feeds: int = 1,
    events: dict[int, tuple[int, str]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Binance one-trade frames through `drive`."""
    return drive(_pipeline(config, feeds), batches, batched, RUN_COMMITS, events)


CONFIGS = {
    "1s+1m late100": RealtimeConfig(timeframes=["1s", "1m"], lateness_ms=100, start_timeout_secs=0),
    "1s late0 small ring": RealtimeConfig(timeframes=["1s"], lateness_ms=0, buffer_size=37, start_timeout_secs=0),
    "drop_newest": RealtimeConfig(
        timeframes=["1s"], lateness_ms=250, buffer_size=300, overflow_policy="drop_newest", start_timeout_secs=0
    ),
    "1s+1m small dedup": RealtimeConfig(
        timeframes=["1m", "1s"], lateness_ms=30, dedup_window=50, offset_window=4, start_timeout_secs=0
    ),
    "no publish": RealtimeConfig(timeframes=["1s"], lateness_ms=100, publish_ticks=False, start_timeout_secs=0),
}


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_batched_frames_equal_frame_by_frame(seed, name):
    batches = _frames(seed)
    config = CONFIGS[name]
    one, one_ticks = _run(batches, config, batched=False)
    many, many_ticks = _run(batches, config, batched=True)
    assert many.keys() == one.keys()
    assert one.pop("in_runs") == 0
    assert many.pop("in_runs") > one["accepted"] // 2
    for key in one:
        assert many[key] == one[key], key
    assert many_ticks == one_ticks
    # the scenario exercised what it should
    assert one["accepted"] > 500
    reasons = one["by_reason"]
    for reason in ("duplicate", "late", "bad_price", "bad_size", "unknown_symbol", "bad_timestamp", "unknown_event"):
        assert reasons.get(reason), (reason, reasons)
    assert reasons.get("malformed_json", 0) + reasons.get("malformed_frame", 0) + reasons.get("invalid_message", 0)
    assert any("'final'" in b for b in one["bars"])
    assert any("'provisional'" in b for b in one["bars"]) or not config.lateness_ms


def test_batched_frames_equal_frame_by_frame_through_failover_and_catchup():
    """Two feeds of the same symbols; the primary drops and comes back: shadows, handover, catch-up, gaps."""
    batches = _frames(7, 2500)
    config = RealtimeConfig(timeframes=["1s"], lateness_ms=100, failback_after_secs=0, start_timeout_secs=0)
    events = {30: (0, "disconnected"), 60: (0, "connected"), 90: (1, "disconnected"), 120: (1, "connected")}
    one, one_ticks = _run(batches, config, batched=False, feeds=2, events=events)
    many, many_ticks = _run(batches, config, batched=True, feeds=2, events=events)
    assert one.pop("in_runs") == 0
    assert many.pop("in_runs") > one["accepted"] // 4
    for key in one:
        assert many[key] == one[key], key
    assert many_ticks == one_ticks
    assert one["accepted"] > 300


def test_binance_parse_trade_frames_equals_parse_frame_or_declines():
    raws = [raw for seed in (1, 2) for _, batch in _frames(seed, 600) for raw in batch]
    assert_trade_frames_equal_parse_frame(binance, raws)
    # Only what follows the stream name's first "@" counts, as in `parse_frame`.
    data = '"data":{"s":"A","t":1,"a":1,"p":"1","q":"1","T":1}'
    assert binance.parse_trade_frames(['{"stream":"a@b@trade",' + data + "}"], 0) is None
    assert binance.parse_trade_frames(['{"stream":"a@aggTrade",' + data + "}"], 0) is None


def test_add_in_window_equals_add_one_and_bounds_hold():
    rng = random.Random(5)
    for lateness in (0, 30 * MS, 400 * MS):
        a, b = BarAggregator("1s", lateness), BarAggregator("1s", lateness)
        t = 50 * S + 990 * MS
        a.add_one("X", t, 10.0, 1.0, "f")
        b.add_one("X", t, 10.0, 1.0, "f")
        a.advance("X", None, 0)
        b.advance("X", None, 0)
        lo, hi, is_open = a.window_bounds("X")
        assert is_open
        assert lo == 50 * S
        assert t < hi <= 51 * S
        ts = [rng.randrange(lo, hi) for _ in range(50)]
        px = [rng.uniform(9, 11) for _ in ts]
        sz = [rng.choice([0.1, 0.01, rng.uniform(0, 2)]) for _ in ts]
        a.add_in_window("X", ts, px, sz, "f")
        for x in zip(ts, px, sz, strict=True):
            assert b.add_one("X", *x, "f")
            assert b.advance("X", None, 0) == []  # nothing to emit inside the bounds
        assert repr(a._open["X"][lo]) == repr(b._open["X"][lo])
        assert a._max_event == b._max_event
        assert vars(a.counters) == vars(b.counters)
        assert repr(a.advance("X", None, 0)) == repr(b.advance("X", None, 0))


def test_latency_add_many_equals_add():
    """A list or an int64 array (a run's latencies), wrapping around the ring or longer than it."""
    for capacity, sizes in ((7, [3, 5, 1, 20, 2]), (100, [50, 60, 1])):
        a, b, c = LatencyRecorder(capacity), LatencyRecorder(capacity), LatencyRecorder(capacity)
        v = 0
        for k in sizes:
            values = list(range(v, v + k))
            v += k
            a.add_many(values)
            c.add_many(np.array(values, dtype=np.int64))
            for x in values:
                b.add(x)
            assert a.count == b.count == c.count
            assert a.samples == b.samples == c.samples
    assert np.isnan(LatencyRecorder(3).percentiles()[50])


def test_feed_in_batch_counts_as_unread_so_the_clock_closes_nothing():
    """While a drained batch is being handed over (the pipeline may await backpressure in the middle of it, and the
    ticker runs), its frames are unread: the exchange clock must not close windows ahead of them."""

    async def go() -> None:
        p = _pipeline(RealtimeConfig(timeframes=["1s"], lateness_ms=0, quiet_close_ms=0, start_timeout_secs=0))
        await p._build_feeds()
        feed = p.feeds[0]
        feed.health.connected = True
        t = 1_700_000_000_000
        await p._on_frames(feed, [_trade("AAA", t, 10.0, 1.0, 1), _trade("AAA", t, 10.0, 1.0, 2)], t * MS)
        wall = (t + 5000) * MS
        assert p._source_now(feed, wall, "AAA") is not None
        feed.in_batch = True
        assert feed.has_unread()
        assert p._source_now(feed, wall, "AAA") is None
        feed.in_batch = False
        assert not feed.has_unread()

    asyncio.run(go())
