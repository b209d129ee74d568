"""The batched run path's fast parts: `_Dedup.add_new` (add first, check by how much the set grew; rebuild and check
first for a while after a duplicate), the symbol runs that group a run's ids by symbol, and the timestamp parser's
prefix comparison. Each is checked against the straightforward version, and through the pipeline against frame by
frame handling with duplicates arriving both while the window adds first and while it checks first."""

from __future__ import annotations

import random
from collections import deque
from functools import partial
from typing import Any

import numpy as np
import orjson
import pytest

from gpt_trader.realtime import DataSource
from gpt_trader.realtime.config import RealtimeConfig
from gpt_trader.realtime.pipeline import _CAREFUL_CALLS, _SMALL, _Dedup, _ids_by_symbol, _symbol_runs
from gpt_trader.realtime.timestamps import _batch_same_second, format_rfc3339_ns, parse_rfc3339_array, parse_rfc3339_ns

from .test_frame_batches import batch_frames, batched_vs_frame_by_frame, drive_trade_arrays

S = 1_000_000_000


class _Window:
    """The dedup window by definition: the newest `capacity` ids recorded, in order."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.order = capacity, deque[Any]()

    def record(self, ids: list[Any]) -> None:
        self.order.extend(ids)
        while len(self.order) > self.capacity:
            self.order.popleft()


@pytest.mark.parametrize("capacity", [1, 5, 50, 400])
def test_add_new_adds_only_new_distinct_ids_and_otherwise_leaves_the_set_as_it_was(capacity):
    rng = random.Random(capacity)
    window, ref = _Dedup(capacity), _Window(capacity)
    next_id, outcomes = 0, set()
    for step in range(3000):
        k = rng.randrange(1, 12)
        ids = list(range(next_id, next_id + k))
        next_id += k
        if step % 150 < 6:  # a burst of duplicates: from the window, the batch itself, or long evicted
            ids[rng.randrange(k)] = rng.choice([next_id - rng.randrange(1, 3 * capacity + 20), ids[0]])
        before, careful = set(window.seen), window.careful
        want = len(set(ids)) == len(ids) and not set(ids) & set(ref.order)
        got = window.add_new(ids)
        outcomes.add((careful > 0, got))
        assert got == want
        if got:
            assert window.seen == before | set(ids)
            assert window.careful == max(0, careful - 1)
            if rng.random() < 0.2:  # the run ends early: its ids come out again, unrecorded
                window.seen.difference_update(ids)
            else:
                window.record_added(ids)
                ref.record(ids)
        else:
            assert window.seen == before
            assert window.careful == _CAREFUL_CALLS
        assert window.seen == set(ref.order)
        assert window.size == len(ref.order) <= capacity
    # Both modes met both outcomes: added first and rebuilt, checked first and refused, and went back to adding first.
    assert outcomes == {(False, True), (False, False), (True, True), (True, False)}


def test_add_new_goes_back_to_adding_first_after_careful_calls():
    window = _Dedup(100)
    window.add_new([1, 2])
    window.record_added([1, 2])
    assert not window.add_new([3, 2])
    assert window.careful == _CAREFUL_CALLS
    assert window.seen == {1, 2}
    for k in range(_CAREFUL_CALLS):
        assert window.add_new([10 + k])
        window.record_added([10 + k])
    assert window.careful == 0
    assert not window.add_new([5, 5])  # a repeat inside the ids, found by the set's growth: rebuilt as it was
    assert window.seen == {1, 2, *range(10, 10 + _CAREFUL_CALLS)}
    assert window.careful == _CAREFUL_CALLS


def _runs_reference(syms: list[str], m: int, ids: list[Any]) -> tuple[dict[str, int], list[int], list[list[Any]]]:
    code = {sym: k for k, sym in enumerate(dict.fromkeys(syms))}
    by_symbol: list[list[Any]] = [[] for _ in code]
    for sym, x in zip(syms[:m], ids[:m], strict=True):
        by_symbol[code[sym]].append(x)
    return code, [code[s] for s in syms], by_symbol


@pytest.mark.parametrize("layout", ["blocks", "interleaved", "one", "mixed"])
def test_symbol_runs_and_ids_by_symbol_equal_the_straightforward_grouping(layout):
    rng = random.Random(layout)
    names = ["AAA", "BBB", "CCC", "DDD"]
    for _ in range(300):
        n = rng.randrange(1, 400)
        if layout == "one":
            syms = ["AAA"] * n
        elif layout == "interleaved":
            syms = [rng.choice(names) for _ in range(n)]
        else:
            syms = []
            while len(syms) < n:
                syms += [rng.choice(names)] * rng.choice([1, 3, 20, 50] if layout == "mixed" else [20, 50, 100])
            syms = syms[:n]
        syms = [s.lower().upper() for s in syms]  # distinct objects, as a decoder makes them
        ids = [rng.randrange(10**9) for _ in range(n)]
        m = rng.randrange(1, n + 1)
        want_code, want_codes, want_by = _runs_reference(syms, m, ids)
        # As the decoders' columns give them, and numbered already, as the compiled scanner gives them.
        numbered = (np.array(want_codes, dtype=np.intp), list(want_code))
        for code, codes, starts, run_codes in (_symbol_runs(syms), _symbol_runs(syms, numbered)):
            assert list(code.items()) == list(want_code.items())
            assert codes.tolist() == want_codes
            starts_l = starts.tolist()
            assert [syms[a] for a in starts_l] == [s for i, s in enumerate(syms) if i == 0 or syms[i - 1] != s]
            assert run_codes.tolist() == [code[syms[a]] for a in starts_l]
            order = np.argsort(codes[:m], kind="stable")
            assert _ids_by_symbol(ids, codes[:m], len(code), starts, run_codes, order) == want_by


def test_ids_by_symbol_takes_both_branches():
    """A few long runs are sliced, many short ones gathered through the sort: both appear in the test above."""
    few = ["A"] * 40 + ["B"] * 40
    many = ["A", "B"] * 40
    for syms in (few, many):
        starts = _symbol_runs(syms)[2]
        assert (len(starts) * _SMALL <= len(syms)) == (syms is few)


def _texts(rng: random.Random) -> list[str]:
    n = rng.randrange(8, 40)
    t = rng.randrange(1_600_000_000, 1_900_000_000) * S
    digits = rng.randrange(1, 10)
    texts = []
    for _ in range(n):
        t += rng.choice([0, 1, 10**6, 3 * 10**8, S, 61 * S, 3600 * S])
        s = format_rfc3339_ns(t)
        texts.append(s[:20] + s[20:29][:digits] + "Z")
    for _ in range(rng.choice([0, 0, 1, 2])):  # corrupt a character or two (a dot, a digit, a separator, the Z)
        k = rng.randrange(n)
        j = rng.randrange(4, len(texts[k]))  # not the year: its nanoseconds stay within int64
        texts[k] = texts[k][:j] + rng.choice("0123456789.:-TZ xé") + texts[k][j + 1 :]
    return texts


def test_batched_rfc3339_equals_the_scalar_parse_or_declines():
    rng = random.Random(5)
    fast = 0
    for _ in range(20_000):
        texts = _texts(rng)
        try:
            want: list[int] | None = [parse_rfc3339_ns(x) for x in texts]
        except (ValueError, IndexError):
            want = None
        try:
            got = _batch_same_second(texts)
        except (ValueError, IndexError):  # only where the scalar parse refuses a timestamp too
            assert want is None
            continue
        if got is not None:
            fast += 1
            assert got.tolist() == want, texts
        try:
            arr: list[int] | None = parse_rfc3339_array(texts).tolist()
        except (ValueError, IndexError):
            arr = None
        assert arr == want, texts
    assert fast > 10_000  # the vectorized path decided most of them, over one and several seconds


def test_batched_rfc3339_declines_a_later_second_without_its_dot():
    texts = [format_rfc3339_ns(1_700_000_000 * S + k * 300_000_000) for k in range(12)]
    assert _batch_same_second(texts).tolist() == [parse_rfc3339_ns(x) for x in texts]
    k = next(i for i in range(2, 12) if texts[i][:19] != texts[i - 1][:19])  # the first row of a later second
    texts[k] = texts[k][:19] + "," + texts[k][20:]
    assert _batch_same_second(texts) is None
    # ISO 8601's other separator is no RFC 3339: refused by both parses (it once passed with its fraction lost)
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_rfc3339_ns(texts[k])
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_rfc3339_array(texts)


def _polygon_frames(seed: int) -> list[tuple[int, list[str]]]:
    """Polygon frames of 20-100 trades of two symbols in long clean stretches (more than `_CAREFUL_CALLS` runs)
    between bursts of duplicates: of the window, of the same frame and of another frame of the batch."""
    rng = random.Random(seed)
    t_ms, next_id = 1_700_000_000_000, 1
    frames: list[str] = []
    for f in range(1400):
        burst = f % 400 >= 380
        messages = []
        for _ in range(rng.choice([20, 50, 100])):
            t_ms += rng.choice([0, 1, 3])
            tid = next_id
            next_id += 1
            if burst and rng.random() < 0.05:
                tid = rng.randrange(max(1, next_id - 300), next_id)
            messages.append({"ev": "T", "sym": rng.choice(["AAA", "BBB"]), "x": 4, "i": str(tid), "p": 10.0,
                             "s": 1.0, "t": t_ms})  # fmt: skip
        frames.append(orjson.dumps(messages).decode())
    return batch_frames(frames, rng)


def test_batched_runs_equal_frame_by_frame_with_duplicates_while_adding_first_and_checking_first(monkeypatch):
    calls: list[tuple[bool, bool]] = []
    add_new = _Dedup.add_new

    def spy(self: _Dedup, ids: list[Any]) -> bool:
        careful = self.careful > 0
        ok = add_new(self, ids)
        calls.append((careful, ok))
        return ok

    monkeypatch.setattr(_Dedup, "add_new", spy)
    run = partial(drive_trade_arrays, DataSource.POLYGON, {"POLYGON_API_KEY": "k"})
    config = RealtimeConfig(timeframes=["1s", "1m"], lateness_ms=50, dedup_window=2000, start_timeout_secs=0)
    one, in_runs = batched_vs_frame_by_frame(run, _polygon_frames(3), config)
    assert one["by_reason"].get("duplicate")
    assert in_runs > one["accepted"] // 2
    assert {(False, True), (False, False), (True, True), (True, False)} <= set(calls)
