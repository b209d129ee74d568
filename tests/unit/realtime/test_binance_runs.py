"""Binance one-trade frames take the batched paths (`parse_trade_frames`, then `_ingest_trade_run` for a few frames or
`_ingest_frame_run` for long runs): the batched parser equals `parse_frame` frame by frame or declines the frame,
whatever sits around a bad frame, and the pipeline fed batches equals the pipeline fed frame by frame."""

from __future__ import annotations

import random
from functools import partial
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt_trader.realtime import DataSource
from gpt_trader.realtime.config import RealtimeConfig
from gpt_trader.realtime.sources import binance

from .test_frame_batches import (
    CONFIGS,
    SYMBOLS,
    _trade,
    assert_trade_frames_equal_parse_frame,
    batched_vs_frame_by_frame,
    drive_trade_arrays,
)

MS = 1_000_000
T0 = 1_700_000_000_000
_run = partial(drive_trade_arrays, DataSource.BINANCE, {})


def _good(k: int, sym: str = "AAA") -> str:
    return _trade(sym, T0 + k, f"{10 + k % 7 / 10!r}", "0.5", 1000 + k)


# Frames `parse_frame` refuses, dead-letters or takes as something other than one plain trade (each must end a run and
# take the per-frame path), and frames that are plain trades in an unusual shape (each must join the run).
BAD = {
    "malformed json": '{"stream":"aaa@trade","data":{"s":"AAA"',
    "not an envelope": '{"e":"trade","s":"AAA","t":1,"p":"1","q":"1","T":1}',
    "array frame": "[" + _good(1) + "]",
    "two events": _good(1) + "," + _good(2),
    "trailing data": _good(1) + " x",
    "concatenated": _good(1) + _good(2),
    "half an event": '{"stream":"aaa@trade","data":{"e":"trade","s":"AAA","t":5,',
    "other half": '"p":"1","q":"1","T":1}}',
    "empty": "",
    "other stream": _good(1).replace("aaa@trade", "aaa@aggTrade"),
    "nested stream name": _good(1).replace("aaa@trade", "aaa@x@trade"),
    "quote": '{"stream":"aaa@bookTicker","data":{"u":1,"s":"AAA","b":"1","B":"1","a":"1.1","A":"1"}}',
    "control": '{"result":null,"id":7}',
    "missing price": _good(1).replace('"p":', '"P":'),
    "price not a number": _good(1).replace('"p":"10.1"', '"p":"abc"'),
    "time not a number": _good(1).replace(f'"T":{T0 + 1}', '"T":"soon"'),
    "time out of range": _good(1).replace(f'"T":{T0 + 1}', f'"T":{2**62}'),
    "time beyond int64": _good(1).replace(f'"T":{T0 + 1}', f'"T":{2**64 - 1}'),
    "event type not a trade": _good(1).replace('"e":"trade"', '"e":"aggTrade"'),
    "symbol unlike the stream": _good(1).replace('"s":"AAA"', '"s":"CCC"'),
}
ODD_BUT_PLAIN = {
    "whitespace around": "  " + _good(1) + "\n",
    "bytes": _good(1).encode(),
    "nan price": _good(1).replace('"p":"10.1"', '"p":"nan"'),
    "negative price": _good(1).replace('"p":"10.1"', '"p":"-1"'),
    "negative time": _good(1).replace(f'"T":{T0 + 1}', '"T":-5'),
    "duplicate id": _good(2),
}


@pytest.mark.parametrize("name", list(BAD))
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_a_bad_frame_ends_the_run_and_is_left_to_parse_frame(name, where):
    good = [_good(k, "AAA" if k % 2 else "BBB") for k in range(6)]
    at = {"start": 0, "middle": 3, "end": 6}[where]
    raws: list[Any] = [*good[:at], BAD[name], *good[at:]]
    assert_trade_frames_equal_parse_frame(binance, raws)
    got = binance.parse_trade_frames(raws, 0)
    assert (got.end if got is not None else 0) == at  # the run stops right before it
    frame = binance.parse_frame(raws[at])
    assert frame.n_trades != 1 or frame.rejects or frame.control or frame.q_ts or frame.bars


@pytest.mark.parametrize("name", list(ODD_BUT_PLAIN))
def test_a_plain_trade_in_an_unusual_shape_joins_the_run(name):
    raws: list[Any] = [_good(0), ODD_BUT_PLAIN[name], _good(2)]
    assert_trade_frames_equal_parse_frame(binance, raws)
    got = binance.parse_trade_frames(raws, 0)
    assert got is not None
    assert got.end == 3


def test_two_frames_that_only_make_sense_joined_are_each_refused():
    """Joined with a comma, these would decode as one event (and the second frame's two as two): frame by frame,
    neither half is an event, and the runs stay aligned with the frames."""
    raws = [_good(0), BAD["half an event"], BAD["other half"], BAD["two events"], _good(3)]
    assert_trade_frames_equal_parse_frame(binance, raws)
    got = binance.parse_trade_frames(raws, 0)
    assert got is not None
    assert got.counts == [1]
    assert binance.parse_trade_frames(raws, 1) is None
    assert binance.parse_trade_frames(raws, 3) is None


def test_trade_time_out_of_range_is_a_bad_timestamp_not_a_crash():
    """Nanoseconds past int64 (the pipeline's columns) are refused as a bad timestamp by `parse_frame`; the batched
    parser leaves that frame to it."""
    for raw in (BAD["time out of range"], BAD["time beyond int64"]):
        frame = binance.parse_frame(raw)
        assert [r.reason for r in frame.rejects] == ["bad_timestamp"]
        assert frame.n_trades == 0
    agg = f'{{"stream":"aaa@aggTrade","data":{{"s":"AAA","a":1,"p":"1","q":"1","T":{2**62}}}}}'
    assert [r.reason for r in binance.parse_frame(agg).rejects] == ["bad_timestamp"]


def test_stop_bounds_the_run():
    raws = [_good(k) for k in range(8)]
    got = binance.parse_trade_frames(raws, 2, 5)
    assert got is not None
    assert (got.start, got.end) == (2, 5)
    assert list(got.ts) == [(T0 + k) * MS for k in range(2, 5)]


def _stream(bad: list[tuple[int, str]], n: int, seed: int) -> list[Any]:
    """`n` trades of two symbols, 1-40 ms apart (out of order now and then), with `bad` (index, name) inserted:
    names from `BAD`/`ODD_BUT_PLAIN`, or "repeat" (an earlier frame again)."""
    rng = random.Random(seed)
    frames: list[Any] = [
        _trade(rng.choice(SYMBOLS[:2]), T0 + k * rng.choice([1, 3, 40]), f"{rng.uniform(10, 11)!r}", "1.0", 1 + k)
        for k in range(n)
    ]
    for at, name in sorted(bad, reverse=True):
        frames.insert(min(at, len(frames)), {**BAD, **ODD_BUT_PLAIN}[name] if name != "repeat" else frames[at // 2])
    return frames


def _batches(frames: list[Any], sizes: list[int]) -> list[tuple[int, list[Any]]]:
    batches, i, k, t_recv = [], 0, 0, T0 * MS
    while i < len(frames):
        size = sizes[k % len(sizes)]
        t_recv += 50 * MS
        batches.append((t_recv, frames[i : i + size]))
        i, k = i + size, k + 1
    return batches


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("commit", ["_commit_run", "_commit_frame_run"])
def test_short_and_long_runs_both_equal_frame_by_frame(seed, commit):
    """Batches of a few frames go through `_ingest_trade_run`, long ones through `_ingest_frame_run`: each path
    carries trades, and the outcome equals frame by frame."""
    bad = [(300, "malformed json"), (700, "repeat"), (1100, "quote"), (1500, "nan price"), (1800, "repeat")]
    batches = _batches(_stream(bad, 2000, seed), [3, 10, 200, 150])
    config = CONFIGS["1s+1m late100"]
    runs = [(commit, 3 if commit == "_commit_run" else 4)]
    one, in_runs = batched_vs_frame_by_frame(_run, batches, config, runs=runs)
    assert in_runs > one["accepted"] // 10, (commit, in_runs, one["accepted"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bad=st.lists(st.tuples(st.integers(0, 120), st.sampled_from([*BAD, *ODD_BUT_PLAIN, "repeat"])), max_size=10),
    sizes=st.lists(st.sampled_from([1, 2, 3, 10, 19, 70, 200]), min_size=1, max_size=6),
    seed=st.integers(0, 3),
)
def test_fuzz_batched_equals_frame_by_frame(bad, sizes, seed):
    frames = _stream(bad, 120, seed)
    assert_trade_frames_equal_parse_frame(binance, frames)
    batches = _batches(frames, sizes)
    config = RealtimeConfig(timeframes=["1s"], lateness_ms=100, start_timeout_secs=0)
    batched_vs_frame_by_frame(_run, batches, config)


def test_frames_are_not_joined_by_one_decode():
    """A frame that is itself an array must not pass as an element of a joined array (see `decode_each`)."""
    raws = [_good(0), "[" + _good(1) + "]", _good(2)]
    got = binance.parse_trade_frames(raws, 0)
    assert got is not None
    assert got.counts == [1]
    assert orjson.loads(raws[1])[0]["data"]["t"] == 1001  # a trade, but in the wrong shape for a frame
