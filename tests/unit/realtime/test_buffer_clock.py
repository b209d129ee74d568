"""Circular buffers (overflow policies and counters) and the clock-offset estimator."""

from __future__ import annotations

import numpy as np
import pytest

from gpt_trader.realtime.buffer import BufferOverflowError, TickRing
from gpt_trader.realtime.clock import OffsetEstimator


def _write(ring: TickRing, start: int, n: int) -> int:
    return ring.write(n, {"ts_event": np.arange(start, start + n), "price": np.arange(start, start + n, dtype=float)})


def test_ring_overwrite_keeps_newest_counts_overwritten():
    ring = TickRing(10, "overwrite")
    _write(ring, 0, 7)
    _write(ring, 7, 7)
    snap = ring.snapshot()
    assert snap["ts_event"].tolist() == list(range(4, 14))
    assert (ring.counters.written, ring.counters.overwritten, ring.counters.dropped) == (14, 4, 0)


def test_ring_overwrite_batch_larger_than_capacity_keeps_tail():
    ring = TickRing(5, "overwrite")
    _write(ring, 0, 12)
    assert ring.snapshot()["price"].tolist() == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert ring.counters.overwritten == 7


def test_ring_drop_newest_refuses_and_counts():
    ring = TickRing(5, "drop_newest")
    assert _write(ring, 0, 3) == 3
    assert _write(ring, 3, 4) == 2
    assert _write(ring, 7, 1) == 0
    assert ring.snapshot()["ts_event"].tolist() == [0, 1, 2, 3, 4]
    assert ring.counters.dropped == 3


def test_ring_raise_policy_raises_when_full():
    ring = TickRing(3, "raise")
    _write(ring, 0, 3)
    with pytest.raises(BufferOverflowError):
        _write(ring, 3, 1)


def test_ring_memory_constant_whatever_the_input():
    ring = TickRing(1000)
    before = ring.nbytes
    for i in range(200):
        _write(ring, i * 97, 97)
    assert ring.nbytes == before
    assert len(ring) == 1000
    assert ring.snapshot(3)["ts_event"].tolist() == [200 * 97 - 3, 200 * 97 - 2, 200 * 97 - 1]


def test_offset_estimator_min_filter_finds_skew_despite_jitter():
    rng = np.random.default_rng(0)
    est = OffsetEstimator(window=256)
    skew = -3_000_000_000  # the exchange clock is 3 s ahead: receive - exchange = -3 s + delay
    for i in range(1000):
        exch = 10**18 + i * 1_000_000
        est.observe(exch + skew + int(rng.exponential(2e6)) + 100_000, exch)
    assert est.offset_ns is not None
    assert abs(est.offset_ns - skew) < 200_000  # within the minimum network delay
    assert est.source_now_ns(10**18) == 10**18 - est.offset_ns
    assert est.correct(10**18) == 10**18 + est.offset_ns


def test_offset_estimator_window_forgets_old_minimum():
    est = OffsetEstimator(window=4)
    est.observe(100, 0)  # an old, small sample
    for _ in range(4):
        est.observe(1000, 500)
    assert est.offset_ns == 500
