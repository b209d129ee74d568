"""BarAggregator: OHLCV/VWAP/count, watermark and lateness, provisional vs final, gaps, backfill, replay round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpt_trader.realtime.bars import BarAggregator, LiveBar, _added
from gpt_trader.realtime.replay import BarSeries, TickTape, load_series, ticks_in_bar

S = 1_000_000_000


def test_aggregator_small_and_vector_paths_same_bar():
    ts = list(range(0, S, S // 40))
    px = [100 + (i * 7 % 11) for i in range(40)]
    sz = [1 + i % 3 for i in range(40)]
    a, b = BarAggregator("1s"), BarAggregator("1s")
    for i in range(0, 40, 4):  # small batches: the scalar path
        a.add("X", ts[i : i + 4], px[i : i + 4], sz[i : i + 4])
    b.add("X", np.array(ts), np.array(px, float), np.array(sz, float))  # one numpy batch
    (bar_a,) = a.advance("X", 2 * S, 0)
    (bar_b,) = b.advance("X", 2 * S, 0)
    assert bar_a == bar_b
    assert (bar_a.open, bar_a.close, bar_a.high, bar_a.low) == (px[0], px[-1], max(px), min(px))
    assert bar_a.volume == sum(sz)
    assert bar_a.vwap == pytest.approx(sum(p * s for p, s in zip(px, sz, strict=True)) / sum(sz))
    assert bar_a.trades == 40
    assert bar_a.status == "final"


def test_aggregator_late_tick_within_lateness_amends_provisional_then_final():
    agg = BarAggregator("1s", lateness_ns=S // 2)
    agg.add("X", [100, 200], [10.0, 11.0], [1.0, 1.0])
    agg.add("X", [S + 10], [12.0], [1.0])  # frontier passes the first window's end
    (prov,) = agg.advance("X", None, 0)
    assert (prov.status, prov.revision, prov.close, prov.volume) == ("provisional", 0, 11.0, 2.0)
    assert agg.add("X", [150], [9.0], [3.0]) == []  # late but within the watermark: amends
    (amended,) = agg.advance("X", None, 0)
    assert (amended.status, amended.revision, amended.low, amended.volume) == ("provisional", 1, 9.0, 5.0)
    assert amended.close == 11.0  # the close is the latest trade by time, not by arrival
    agg.add("X", [S + S // 2 + 1], [12.5], [1.0])
    (final,) = agg.advance("X", None, 0)
    assert (final.status, final.revision, final.volume) == ("final", 2, 5.0)
    assert agg.add("X", [300], [1.0], [1.0]) == [0]  # now too late: refused, counted
    assert agg.counters.late == 1


def test_aggregator_window_without_trades_never_emitted():
    agg = BarAggregator("1s")
    agg.add("X", [0], [1.0], [1.0])
    agg.add("X", [5 * S], [2.0], [1.0])
    bars = agg.advance("X", 10 * S, 0)
    assert [b.ts_ns for b in bars] == [0, 5 * S]


def test_aggregator_idle_feed_closes_by_source_clock():
    agg = BarAggregator("1s", lateness_ns=0)
    agg.add("X", [10], [1.0], [1.0])
    assert agg.advance("X", S // 2, 0) == []
    (bar,) = agg.advance("X", S, 0)
    assert bar.final


def test_aggregator_gap_holds_final_until_backfill_replaces_windows():
    agg = BarAggregator("1s")
    agg.add("X", [100], [10.0], [1.0])
    gap = agg.open_gap("X", 100)
    agg.add("X", [3 * S + 5], [13.0], [1.0])
    agg.close_gap(gap, 3 * S + 5)
    bars = agg.advance("X", 6 * S, 0)
    assert bars
    assert all(b.status == "provisional" and b.gap for b in bars)
    assert agg.gap_ready(gap, 6 * S)
    history = [(0, 10.0, 10.5, 9.5, 10.2, 7.0), (S, 10.2, 11.0, 10.0, 10.8, 5.0), (3 * S, 12.9, 13.5, 12.5, 13.1, 9.0)]
    assert agg.resolve_gap(gap, history) == 3
    bars = agg.advance("X", 6 * S, 0)
    assert [(b.ts_ns, b.status, b.backfilled, b.gap, b.close) for b in bars] == [
        (0, "final", True, False, 10.2),
        (S, "final", True, False, 10.8),
        (3 * S, "final", True, False, 13.1),
    ]
    assert math.isnan(bars[0].vwap)
    assert bars[0].trades == -1


def test_aggregator_failed_backfill_final_bars_flagged_gap():
    agg = BarAggregator("1s")
    agg.add("X", [100], [10.0], [1.0])
    gap = agg.open_gap("X", 100)
    agg.close_gap(gap, 2 * S)
    agg.resolve_gap(gap, None)
    (bar,) = agg.advance("X", 5 * S, 0)
    assert bar.final
    assert bar.gap
    assert not bar.backfilled


def test_livebar_fields_round_trip():
    bar = LiveBar("X", "1s", 5, 1.0, 2.0, 0.5, 1.5, 10.0, 1.25, 3, "final", True, False, 2, "alpaca", 99)
    assert LiveBar.from_fields({k.encode(): v.encode() for k, v in bar.to_fields().items()}) == bar


@pytest.mark.parametrize("volume", [877000000.0, 0.0, 143539993.3])
def test_ticks_in_bar_aggregate_back_to_bar(volume):
    rng = np.random.default_rng(1)
    fr, px, sz = ticks_in_bar(100.0, 110.0, 95.0, 104.0, volume, 20, rng)
    assert (px[0], px[-1], px.max(), px.min()) == (100.0, 104.0, 110.0, 95.0)
    assert sz.sum() == pytest.approx(volume, rel=1e-12, abs=1e-9)
    assert (sz >= 0).all()
    assert (np.diff(fr) >= 0).all()
    assert fr[0] == 0
    assert fr[-1] < 1


def test_tape_bars_replayed_equal_bundled_bars():
    series = load_series("SPX")
    tape = TickTape(series, ticks_per_bar=20)
    agg = BarAggregator("1d")
    ts, px, sz, _ = tape.chunk(0, 20 * 50)
    for i in range(0, len(ts), 37):  # odd batch sizes cross bar boundaries
        agg.add("SPX", ts[i : i + 37], px[i : i + 37], sz[i : i + 37])
    bars = agg.advance("SPX", None, 0) + agg.flush("SPX", 0)
    got = np.array([[b.ts_ns, b.open, b.high, b.low, b.close, b.volume] for b in bars])
    want = np.column_stack(
        [series.ts[:50], series.open[:50], series.high[:50], series.low[:50], series.close[:50], series.volume[:50]]
    )
    assert len(bars) == 50
    np.testing.assert_array_equal(got[:, 0].astype(np.int64), series.ts[:50])
    np.testing.assert_allclose(got[:, 1:], want[:, 1:], rtol=1e-12)


def test_bar_series_from_frame_columns(bars_factory):
    s = BarSeries.from_frame("T", bars_factory(3), 86400)
    assert len(s) == 3
    assert s.timeframe_ns == 86400 * S


@pytest.mark.parametrize("path", ["scalar", "numpy", "add_one", "add_run"])
def test_aggregator_first_window_joined_after_its_start_says_it_may_lack_trades(path: str):
    def feed(agg: BarAggregator, ts: list[int]) -> None:
        px, sz = [100.0 + i for i in range(len(ts))], [1.0] * len(ts)
        if path == "scalar":
            agg.add("X", ts, px, sz)
        elif path == "numpy":
            agg.add("X", np.array(ts * 4), np.array(px * 4), np.array(sz * 4))  # >= 8 trades: the numpy path
        elif path == "add_one":
            for t, p, s in zip(ts, px, sz, strict=True):
                agg.add_one("X", t, p, s)
        else:
            agg.add_run("X", ts[0], px[0], ts[-1], px[-1], max(px), min(px), sum(sz), sum(px), len(ts))

    joined, aligned = BarAggregator("1s"), BarAggregator("1s")
    feed(joined, [S // 3, S // 2])  # the stream starts a third of the way into the first second
    feed(aligned, [0, S // 2])  # a trade at the window's first nanosecond: nothing before it to miss
    (opened,) = joined.open_windows("X")
    assert opened.gap
    for agg in (joined, aligned):
        feed(agg, [S + S // 3, S + S // 2])  # the next window: complete whenever it starts
    first, second = joined.advance("X", 3 * S, 0)
    assert (first.gap, second.gap) == (True, False)
    assert [b.gap for b in aligned.advance("X", 3 * S, 0)] == [False, False]
    assert joined.counters.gap_bars == 1


def test_terms_summed_as_arrays_round_as_the_python_loop_does():
    """`_added` of an array (by `np.add.accumulate`) rounds after each term as a Python loop does: the same bits on
    terms of wildly different magnitudes and signs, where a pairwise sum (`np.sum`) or `math.fsum` would differ."""
    rng = np.random.default_rng(7)
    differs_from_pairwise = 0
    for _ in range(300):
        n = int(rng.integers(1, 600))
        terms = rng.standard_normal(n) * 10.0 ** rng.integers(-8, 12, n)
        start = float(rng.standard_normal() * 10.0 ** rng.integers(-3, 9))
        want = start
        for x in terms.tolist():
            want += x
        assert repr(_added(start, terms)) == repr(want)
        assert repr(_added(start, terms.tolist())) == repr(want)
        differs_from_pairwise += repr(float(start + np.sum(terms))) != repr(want)
    assert differs_from_pairwise > 30  # the case is one where the order of the additions shows
