"""Fuzzing: malformed input never crashes a parser or the pipeline, and never changes a bar."""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt_trader.core.clock import SimClock
from gpt_trader.realtime import DataSource, RealtimePipeline, StreamConfig
from gpt_trader.realtime.bus import InProcessBus
from gpt_trader.realtime.config import RealtimeConfig
from gpt_trader.realtime.sources import alpaca, binance, iex, polygon
from gpt_trader.realtime.timestamps import format_rfc3339_ns, ns_to_datetime

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["T", "ev", "S", "sym", "p", "s", "t", "stream", "data", "symbol", "price", "size", "time", "x", "i"]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(raw=st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_parsers_arbitrary_input_never_raise(raw):
    for parse in (alpaca.parse_frame, binance.parse_frame, polygon.parse_frame, iex.parse_frame):
        frame = parse(raw)
        assert all(math.isfinite(t) for t in frame.t_ts)
    for source in (alpaca, polygon, binance):  # the batched parsers decline what is not plain trades, or agree
        cols = source.parse_trade_frames([raw, raw], 0)
        if cols is not None:
            frame = source.parse_frame(raw)
            assert cols.counts == [frame.n_trades] * 2
            assert np.asarray(cols.ts).tolist() == frame.t_ts * 2
            assert cols.ids == frame.t_id * 2


S = 1_000_000_000
BASE = 1_700_000_000 * S


def _trade(i: int, price: float = 100.0, size: float = 10.0, symbol: str = "AAPL") -> dict:
    return {"T": "t", "S": symbol, "i": i, "x": "V", "p": price, "s": size, "t": format_rfc3339_ns(BASE + i * S // 10)}


GOOD = [orjson.dumps([_trade(i, 100.0 + (i % 7), 1.0 + i % 3) for i in range(k * 5, k * 5 + 5)]) for k in range(8)]
BAD_FRAMES = [
    b"{not json",
    b'[{"T":"zz","S":"AAPL"}]',
    json.dumps([_trade(900, price=float("nan"))]).encode(),  # NaN is not JSON: a malformed frame
    orjson.dumps([_trade(901, price=-5.0)]),
    orjson.dumps([_trade(902, size=1e30)]),
    orjson.dumps([_trade(903, symbol="MSFT")]),
    orjson.dumps([_trade(3, 100.0 + 3 % 7, 1.0 + 3 % 3)]),  # a duplicate of trade 3
    b"[]",
    orjson.dumps({"T": "t"}),
]


def _pipeline(clock: SimClock) -> RealtimePipeline:
    config = RealtimeConfig(timeframes=["1s"], lateness_ms=0, start_timeout_secs=0)
    env = {"APCA_API_KEY_ID": "k", "APCA_API_SECRET_KEY": "s"}
    return RealtimePipeline(
        [StreamConfig(DataSource.ALPACA, ["AAPL"], url="ws://127.0.0.1:9")],
        config,
        bus=InProcessBus(),
        environ=env,
        clock=clock,
    )


async def _run(frames: list[bytes]) -> tuple[list, RealtimePipeline]:
    clock = SimClock(ns_to_datetime(BASE))
    p = _pipeline(clock)
    await p._build_feeds()
    feed = p.feeds[0]
    feed.health.connected = True
    good = 0
    for raw in frames:
        good += raw in GOOD
        recv = BASE + (good + 1) * S // 2  # frames arrive just after their trades, as on a live feed
        clock.set(ns_to_datetime(recv))
        await p._on_frame(feed, raw, recv)
    p.flush_bars()
    await p._flush()
    bars = p.final_bars("AAPL", "1s")
    return [(b.ts_ns, b.open, b.high, b.low, b.close, b.volume, b.trades) for b in bars], p


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(positions=st.lists(st.tuples(st.integers(0, len(GOOD)), st.sampled_from(BAD_FRAMES)), max_size=12))
def test_pipeline_bad_frames_interleaved_bars_unchanged_and_dead_lettered(positions):
    clean, _ = asyncio.run(_run(GOOD))
    mixed = list(GOOD)
    for pos, bad in sorted(positions, key=lambda x: -x[0]):
        mixed.insert(pos, bad)
    got, p = asyncio.run(_run(mixed))
    assert got == clean
    n_bad = sum(1 for _, bad in positions if bad != b"[]")
    assert p.dead_letters.total == n_bad
    assert asyncio.run(p.bus.length("deadletter")) == n_bad


def test_pipeline_dead_letter_reasons_named():
    _, p = asyncio.run(_run(GOOD + BAD_FRAMES))
    assert p.dead_letters.by_reason() == {
        "malformed_json": 2, "unknown_event": 1, "bad_price": 1, "bad_size": 1, "unknown_symbol": 1,
        "duplicate": 1, "malformed_frame": 1,
    }  # fmt: skip
