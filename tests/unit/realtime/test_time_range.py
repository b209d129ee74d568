"""A message time whose nanoseconds do not fit the pipeline's int64 columns is a `bad_timestamp` dead letter, on
every adapter and path, and the trades beside it still count: it used to escape as an OverflowError (Alpaca's RFC
3339 years past 2262) or a TypeError (IEX millisecond times past int64) and stop the pipeline."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from gpt_trader.realtime import DataSource
from gpt_trader.realtime.sources import alpaca, iex
from gpt_trader.realtime.timestamps import parse_rfc3339_array, parse_rfc3339_batch, parse_rfc3339_ns
from tests.support.frames import run_frames

NOW_S = time.time_ns() // 1_000_000_000
NOW = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(NOW_S))


@pytest.mark.parametrize(
    "text",
    ["2263-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z", "1000-01-01T00:00:00.5Z", "9999-01-01T00:00:00+01:00"],
)
def test_rfc3339_outside_int64_ns_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="int64"):
        parse_rfc3339_ns(text)
    texts = [f"{NOW}.{k:03d}Z" for k in range(10)] + [text]  # long enough for the vectorized path
    with pytest.raises(ValueError, match="int64"):
        parse_rfc3339_array(texts)
    with pytest.raises(ValueError, match="int64"):
        parse_rfc3339_batch(texts)


def test_rfc3339_edges_of_the_range_still_parse() -> None:
    for text in ("2262-04-10T00:00:00.999999999", "1677-09-22T00:00:00"):
        assert parse_rfc3339_ns(text + "Z") == np.datetime64(text, "ns").astype(np.int64)


def _alpaca(i: int, t: str) -> dict[str, object]:
    return {"T": "t", "S": "AAA", "i": i, "x": "V", "p": 10.0 + i / 100, "s": 1, "t": t, "c": ["@"], "z": "C"}


@pytest.mark.parametrize("batched", [False, True])
def test_alpaca_years_past_2262_are_dead_letters_and_the_rest_counts(batched: bool) -> None:
    good = [_alpaca(k, f"{NOW}.{k:03d}Z") for k in range(12)]
    frames = [
        orjson.dumps(good[:6]),
        orjson.dumps([_alpaca(100, "9999-12-02T10:00:00.2Z"), *good[6:9]]),  # a bad one inside a frame
        orjson.dumps([_alpaca(101 + k, f"2300-01-01T00:00:00.{k}Z") for k in range(9)]),  # a frame of them
        orjson.dumps(good[9:]),
    ]
    p = run_frames(DataSource.ALPACA, frames, batched)
    assert p.dead_letters.by_reason() == {"bad_timestamp": 10}
    assert p.ticks_accepted == 12


@pytest.mark.parametrize("batched", [False, True])
def test_iex_times_past_int64_are_dead_letters_and_the_rest_counts(batched: bool) -> None:
    now_ms = NOW_S * 1000
    frames = [
        orjson.dumps({"symbol": "AAA", "price": 10.0, "size": 1, "time": now_ms, "seq": 1}),
        orjson.dumps({"symbol": "AAA", "price": 10.0, "size": 1, "time": 1e17, "seq": 2}),
        orjson.dumps({"symbol": "AAA", "price": 10.0, "size": 1, "time": -(2**62), "seq": 3}),
        b'{"symbol":"AAA","bidPrice":9.9,"askPrice":10.1,"bidSize":1,"askSize":1,"lastUpdated":%d}' % 2**70,
        orjson.dumps(
            [
                {"symbol": "AAA", "price": 10.0, "size": 1, "time": 9.3e15, "seq": 4},
                {"symbol": "AAA", "price": 10.1, "size": 1, "time": now_ms + 1, "seq": 5},
            ]
        ),
    ]
    p = run_frames(DataSource.IEX, frames, batched)
    assert p.dead_letters.by_reason() == {"bad_timestamp": 4}
    assert p.ticks_accepted == 2


def test_adapters_reject_the_time_with_its_reason() -> None:
    frame = alpaca.parse_frame(orjson.dumps([_alpaca(1, "9999-01-01T00:00:00.1Z")]))
    assert [r.reason for r in frame.rejects] == ["bad_timestamp"]
    assert alpaca.parse_trade_frames([orjson.dumps([_alpaca(1, "9999-01-01T00:00:00.1Z")])], 0) is None
    frame = iex.parse_frame(orjson.dumps({"symbol": "AAA", "price": 10.0, "size": 1, "time": 1e17}))
    assert [r.reason for r in frame.rejects] == ["bad_timestamp"]
    assert not frame.t_ts
