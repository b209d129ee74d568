"""A trade stamped ahead of the exchange's clock (a bad print, still within `max_future_secs`) must not close bars
early: before, it set the clock-offset estimate and moved the bars' frontier by as much, and every real trade of
the windows it skipped was refused as late. Now the estimator sets such a sample aside unless the next frames
confirm it (a clock that really stepped), and the frontier is held at the source's clock plus the lateness."""

from __future__ import annotations

import asyncio
import random
from functools import partial
from typing import Any

import pytest

from gpt_trader.realtime import DataSource
from gpt_trader.realtime.bars import BarAggregator
from gpt_trader.realtime.clock import OffsetEstimator
from gpt_trader.realtime.config import RealtimeConfig

from .test_frame_batches import _trade, batched_vs_frame_by_frame, drive_trade_arrays

S = 1_000_000_000
MS = 1_000_000
T0 = 1_700_000_000_000  # ms
_run = partial(drive_trade_arrays, DataSource.BINANCE, {})


# --- the estimator ----------------------------------------------------------------------------------------------
def test_an_early_sample_alone_is_set_aside():
    est = OffsetEstimator(window=64, outlier_ns=250 * MS, confirm=3)
    for k in range(10):
        est.observe(k * 10 * MS + 5 * MS, k * 10 * MS)  # 5 ms delay
    assert est.offset_ns == 5 * MS
    assert est.observe(100 * MS, 100 * MS + 3 * S) == 5 * MS  # stamped 3 s ahead: not the clock
    assert est.outliers == 1
    assert est.observe(110 * MS, 105 * MS) == 5 * MS
    assert est.observe(120 * MS, 120 * MS + 3 * S) == 5 * MS  # another, not in a row: still aside
    assert est.outliers == 2


def test_a_clock_that_steps_ahead_is_followed_after_confirm_frames():
    est = OffsetEstimator(window=64, outlier_ns=250 * MS, confirm=3)
    est.observe(5 * MS, 0)
    step = 2 * S  # the exchange's clock jumps 2 s ahead and stays there
    got = [est.observe(k * 10 * MS + 5 * MS, k * 10 * MS + step) for k in range(1, 5)]
    assert got == [5 * MS, 5 * MS, 5 * MS - step, 5 * MS - step]
    assert est.outliers == 2


def test_one_orders_fills_at_one_time_never_confirm_a_step():
    """Binance sends each fill of an order as its own frame, all at the order's time: three frames of one bad print
    are one sample repeated, not three frames that agree."""
    est = OffsetEstimator(window=64, outlier_ns=250 * MS, confirm=3)
    est.observe(5 * MS, 0)
    bad = 10 * MS + 3 * S
    assert [est.observe(k * MS + 12 * MS, bad) for k in range(5)] == [5 * MS] * 5
    assert est.outliers == 5


def test_a_bad_print_as_the_very_first_sample_is_dropped_once_the_next_ones_agree():
    """The first sample has nothing to be checked against, so the estimate rests on it alone (`provisional`) until
    a later one comes within the margin of it; here it was stamped 2 s ahead, and the next three agree among
    themselves 2 s above it: it is dropped and the estimate is theirs."""
    est = OffsetEstimator(window=64, outlier_ns=250 * MS, confirm=3)
    assert est.observe(5 * MS, 2 * S) == 5 * MS - 2 * S
    assert est.provisional
    got = [est.observe(k * 10 * MS + 5 * MS + k * MS, k * 10 * MS) for k in range(1, 4)]
    assert got == [5 * MS - 2 * S, 5 * MS - 2 * S, 6 * MS]  # the least of the three that agree
    assert not est.provisional
    assert (est.first_dropped, est.outliers) == (1, 0)


def test_a_first_sample_is_settled_by_one_that_agrees_and_not_by_its_own_fills():
    est = OffsetEstimator(window=64, outlier_ns=250 * MS, confirm=3)
    est.observe(5 * MS, 0)
    est.observe(6 * MS, 0)  # another fill of the first frame's order: says nothing
    assert est.provisional
    assert est.observe(17 * MS, 10 * MS) == 5 * MS  # 7 ms: within the margin of the first
    assert not est.provisional
    assert est.first_dropped == 0
    for k in range(2, 6):  # later samples far above it (a slow network) no longer move it
        assert est.observe(k * 10 * MS + 400 * MS, k * 10 * MS) == 5 * MS


def test_one_orders_fills_far_above_the_first_sample_do_not_drop_it():
    est = OffsetEstimator(window=64, outlier_ns=250 * MS, confirm=3)
    est.observe(5 * MS, 0)
    for k in range(4):  # one order's fills, all at its time, 400 ms above the first
        est.observe(400 * MS + 10 * MS + k * MS, 10 * MS)
    assert (est.provisional, est.first_dropped, est.offset_ns) == (True, 0, 5 * MS)


def test_the_first_sample_leaving_the_window_settles_the_estimate():
    """Samples far above the first that never agree among themselves neither drop it nor settle it; once it has
    left the window the estimate no longer rests on it."""
    est = OffsetEstimator(window=8, outlier_ns=250 * MS, confirm=3)
    est.observe(5 * MS, 0)
    for k in range(1, 12):
        est.observe(k * 10 * MS + (400 if k % 2 else 800) * MS, k * 10 * MS)
    assert not est.provisional
    assert est.first_dropped == 0


def test_a_step_is_confirmed_only_by_samples_that_agree():
    """Two frames of a real step (our clock stepped back 400 ms) and then a bad print 3 s ahead: the print does not
    confirm the step (it used to become the offset); the step's own frames do, as the least early of them."""
    est = OffsetEstimator(window=64, outlier_ns=250 * MS, confirm=3)
    est.observe(5 * MS, 0)
    step = -400 * MS  # receive - exchange drops by 400 ms
    got = [est.observe(k * 10 * MS + 5 * MS + step, k * 10 * MS) for k in (1, 2)]
    got.append(est.observe(30 * MS + 5 * MS + step, 30 * MS + 3 * S))  # the bad print
    assert got == [5 * MS] * 3
    got = [est.observe(k * 10 * MS + 5 * MS + step + j * MS, k * 10 * MS) for j, k in enumerate((4, 5, 6))]
    assert got == [5 * MS, 5 * MS, 5 * MS + step + 2 * MS]  # the least early of the three that agree


def test_a_sample_set_aside_leaves_the_last_delay_as_it_was():
    """The last delay guards the source's clock against frames read late; a bad print set aside must not reset it
    (it made the delay -3 s, and a backlog's windows closed by the clock)."""
    est = OffsetEstimator(window=64, outlier_ns=250 * MS, confirm=3)
    est.observe(5 * MS, 0)
    est.observe(2_400 * MS, 10 * MS)  # read 2.4 s late
    assert est.last_delay_ns == 2_385 * MS
    est.observe(2_410 * MS, 20 * MS + 3 * S)  # a bad print
    assert est.last_delay_ns == 2_385 * MS


def test_without_outlier_bound_every_sample_counts():
    est = OffsetEstimator(window=64)
    est.observe(5 * MS, 0)
    assert est.observe(15 * MS, 10 * MS + 3 * S) == 5 * MS - 3 * S  # what a bad print did to the clock before
    assert est.outliers == 0


def test_a_run_stops_before_a_sample_it_would_set_aside():
    """`observe_run(stop_early=True)` (the pipeline's batched runs) leaves an early sample unobserved for the
    frame-by-frame path, which sets it aside and keeps its trades from moving the frontier."""
    est = OffsetEstimator(window=64, outlier_ns=250 * MS, confirm=3)
    est.observe(5 * MS, 0)
    est.observe(6 * MS, 1 * MS)  # agrees with the first: the estimate is settled
    got = est.observe_run(50 * MS, [10 * MS, 20 * MS, 30 * MS + 3 * S, 40 * MS], stop_early=True)
    assert got == [5 * MS, 5 * MS]
    assert (est.samples, est.outliers) == (4, 0)
    assert est.observe(50 * MS, 30 * MS + 3 * S) == 5 * MS
    assert est.outliers == 1


def test_held_trades_stay_in_their_window_without_moving_the_frontier():
    agg = BarAggregator("1s", lateness_ns=100 * MS)
    agg.add_one("X", 10 * S + 500 * MS, 10.0, 1.0)
    top = agg.newest("X")
    agg.add_one("X", 14 * S, 99.0, 1.0)  # a bad print 3.5 s ahead
    agg.hold_newest("X", top)
    assert agg.newest("X") == 10 * S + 500 * MS
    assert agg.advance("X", None, 0) == []
    assert agg.add_one("X", 10 * S + 900 * MS, 11.0, 2.0)  # a real trade of window 10 s: not late
    agg.add_one("X", 11 * S + 200 * MS, 11.0, 1.0)
    bars = agg.advance("X", None, 0)
    assert [(b.ts_ns, b.status, b.trades, b.volume) for b in bars] == [(10 * S, "final", 2, 3.0)]
    assert [b.ts_ns for b in agg.flush("X", 0)] == [11 * S, 14 * S]  # the bad print's bar, where it said it was
    # Without the hold the bad print alone closes windows 10-13 s: the real trade would have been late.
    agg2 = BarAggregator("1s", lateness_ns=100 * MS)
    agg2.add_one("X", 10 * S + 500 * MS, 10.0, 1.0)
    agg2.add_one("X", 14 * S, 99.0, 1.0)
    agg2.advance("X", None, 0)
    assert not agg2.add_one("X", 10 * S + 900 * MS, 11.0, 2.0)
    fresh = BarAggregator("1s")
    fresh.add_one("Y", 5 * S, 1.0, 1.0)
    fresh.hold_newest("Y", fresh.newest("Z"))  # held back to "no trade yet"
    assert fresh.advance("Y", None, 0) == []


# --- the pipeline -----------------------------------------------------------------------------------------------
KEEPING_UP = (1, 1, 2, 5)
BACKLOG = (1, 1, 2, 5, 20, 120)  # up to 120 frames (1.2 s of trades) read at once: a client that fell behind


def _stream(
    bad_at: dict[int, int], n: int = 600, seed: int = 0, sizes: tuple[int, ...] = KEEPING_UP
) -> list[tuple[int, list[str]]]:
    """Two symbols' trades 10 ms apart on an exchange whose clock runs with ours (each batch received 2-8 ms after
    its newest trade), batches of `sizes` frames; `bad_at` maps a frame index to how many ms ahead it is stamped."""
    rng = random.Random(seed)
    frames: list[tuple[int, str]] = []
    for k in range(n):
        t = T0 + 10 * k
        stamp = t + bad_at.get(k, 0)
        frames.append((t, _trade(("AAA", "BBB")[k % 2], stamp, f"{10 + rng.random():.4f}", "1.0", k + 1)))
    batches: list[tuple[int, list[str]]] = []
    i = 0
    while i < n:
        size = rng.choice(sizes)
        chunk = frames[i : i + size]
        batches.append(((chunk[-1][0] + rng.randrange(2, 9)) * MS, [raw for _, raw in chunk]))
        i += size
    return batches


CONFIG = RealtimeConfig(timeframes=["1s", "1m"], lateness_ms=100, start_timeout_secs=0)


@pytest.mark.parametrize("ahead_ms", [400, 2500, 4900])
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_a_bad_print_ahead_of_the_clock_loses_no_real_trade(ahead_ms, batched, seed):
    bad = {150: ahead_ms, 151: ahead_ms, 400: ahead_ms}  # two in a row: fewer than `clock_confirm_frames`
    state, _ = _run(_stream(bad, seed=seed), CONFIG, batched=batched)
    assert state["by_reason"] == {}  # nothing refused, nothing late
    assert state["accepted"] == 600
    assert state["agg:1s"][0]["late"] == state["agg:1m"][0]["late"] == 0


@pytest.mark.parametrize("batched", [False, True])
def test_three_fills_of_one_bad_order_are_not_a_clock_step(batched):
    """Frames 150-152 carry one order's fills, all stamped 4.0 s (2.5 s ahead): one bad print, not a step (three
    frames that merely agreed used to confirm it, and real trades went late)."""
    state, _ = _run(_stream({150: 2500, 151: 2490, 152: 2480}), CONFIG, batched=batched)
    assert state["by_reason"] == {}
    assert state["accepted"] == 600


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_in_a_backlog_a_print_further_ahead_than_the_backlog_is_still_caught(seed):
    """Read 1.2 s behind, real trades look 1.2 s older than the clock at receipt: a print is told apart only when
    it is further ahead than that plus `clock_outlier_ms` (one less far ahead looks like a real, fresh trade)."""
    bad = {150: 4900, 151: 4900, 400: 4900}
    state, _ = _run(_stream(bad, seed=seed, sizes=BACKLOG), CONFIG, batched=True)
    assert state["by_reason"] == {}
    assert state["accepted"] == 600


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("ahead_ms", [400, 2500])
def test_a_bad_print_as_a_feeds_first_frame_loses_no_real_trade(batched, ahead_ms):
    """The feed's very first frame is stamped ahead: nothing came before to tell, so the frontier waits for the next
    frames (the source's clock is taken as ours meanwhile) and the estimate drops the print once they agree."""
    state, _ = _run(_stream({0: ahead_ms}, seed=5), CONFIG, batched=batched)
    assert state["by_reason"] == {}
    assert state["accepted"] == 600
    assert state["agg:1s"][0]["late"] == state["agg:1m"][0]["late"] == 0
    (offset, dropped, provisional) = next(v for k, v in state.items() if k.startswith("clock:"))
    assert (dropped, provisional) == (1, False)
    assert 2 * MS <= offset <= 8 * MS  # each batch received 2-8 ms after its newest trade


def test_before_the_fix_a_bad_print_first_made_real_trades_late():
    """The same first frame with every sample trusted: real trades of the windows it skipped go late."""
    config = CONFIG.model_copy(update={"clock_outlier_ms": None})
    state, _ = _run(_stream({0: 2500}, seed=5), config, batched=False)
    assert state["by_reason"].get("late", 0) > 0


def test_before_the_fix_a_bad_print_made_real_trades_late():
    """The same stream with every sample trusted (the estimator as it was): the bad print moves the clock and the
    frontier, and real trades are refused as late. (Shows the test above can fail.)"""
    config = CONFIG.model_copy(update={"clock_outlier_ms": None})
    state, _ = _run(_stream({150: 2500}), config, batched=False)
    assert state["by_reason"].get("late", 0) > 0


@pytest.mark.parametrize("sizes", [KEEPING_UP, BACKLOG])
def test_batches_with_bad_prints_equal_frame_by_frame(sizes):
    """Prints caught or not (some in a backlog look fresh), three in a row (a clock step): batched runs stop before
    a frame the estimator sets aside, and the outcome equals frame by frame."""
    bad = {k: random.Random(k).choice([300, 1200, 4000]) for k in (40, 41, 150, 151, 300, 420, 421, 422, 700)}
    one, in_runs = batched_vs_frame_by_frame(_run, _stream(bad, 900, seed=3, sizes=sizes), CONFIG)
    assert in_runs > one["accepted"] // 3


@pytest.mark.parametrize("seed", range(6))
def test_long_runs_in_array_operations_equal_the_loop(seed, monkeypatch):
    """`observe_run` takes runs of 32+ samples in array operations where it can (no minimum falls out of the window,
    no sample set aside): the offsets and the estimator's whole state equal the per-sample loop's, whatever the
    delays, early samples, times ahead, windows and outlier settings."""
    from gpt_trader.realtime import clock

    vectorized = 0
    many = OffsetEstimator._observe_many

    def counting(self: OffsetEstimator, *a: Any) -> list[int]:
        nonlocal vectorized
        vectorized += 1
        return many(self, *a)

    monkeypatch.setattr(OffsetEstimator, "_observe_many", counting)
    rng = random.Random(seed)
    for _ in range(150):
        args = (rng.choice([4, 40, 64, 512]), rng.choice([None, 0, 5 * MS, 250 * MS]), rng.choice([1, 2, 3]))
        fast, slow = OffsetEstimator(*args), OffsetEstimator(*args)
        recv = T0 * MS
        for _ in range(rng.randrange(1, 8)):
            recv += rng.randrange(0, 50) * MS
            n = rng.choice([1, 5, 31, 32, 33, 64, 200, 600])
            jitter = rng.choice([0, 1, 20, 400]) * MS
            times = [recv - rng.randrange(0, jitter + 1) - 2 * MS for _ in range(n)]
            for _ in range(rng.choice([0, 0, 1, 3])):
                times[rng.randrange(n)] = recv + rng.randrange(1, 5000) * MS  # early ones, maybe past `ahead_ns`
            ahead = rng.choice([None, 5 * S, 100 * MS])
            stop_early = rng.random() < 0.8
            got = fast.observe_run(recv, times, ahead, stop_early)
            with monkeypatch.context() as m:
                m.setattr(clock, "_VECTOR_MIN", 10**9)  # the loop only
                want = slow.observe_run(recv, times, ahead, stop_early)
            assert got == want
            assert list(fast._mins) == list(slow._mins)
            state = ("_seq", "samples", "last_sample_ns", "outliers", "_early", "_early_run")
            assert [getattr(fast, k) for k in state] == [getattr(slow, k) for k in state]
    assert vectorized > 30  # the array path served a good share of the runs (not an unsettled estimator's)


def test_a_bad_print_first_after_an_outage_does_not_stretch_the_gap_into_the_future():
    """The gap of an outage ends at the first trade after it; a bad print 3 s ahead coming first used to end it
    there, flagging (and holding back from final) every real window until then."""
    from .test_bar_edges import _Clocked

    async def go() -> _Clocked:
        c = _Clocked(RealtimeConfig(timeframes=["1s"], lateness_ms=250, start_timeout_secs=0, backfill="none"))
        await c.build()
        for k in range(50):
            await c.trade(T0 * MS + k * 10 * MS)  # 0.00-0.49 s
        await c.outage(T0 * MS + 500 * MS, T0 * MS + 1200 * MS)
        c.wall = T0 * MS + 1200 * MS
        c.tid += 1
        bad = _trade("AAA", T0 + 1200 + 3000, "100.0", "1.0", c.tid)
        await c.p._on_frame(c.feed, bad, c.wall)
        assert c.feed.estimator.outliers == 1
        await c.trade(T0 * MS + 1210 * MS)
        return c

    c = asyncio.run(go())
    gap = c.p.aggregators[0]._gaps["AAA"][0]
    assert (gap.start_ns, gap.end_ns) == (T0 * MS + 490 * MS, T0 * MS + 1210 * MS)
