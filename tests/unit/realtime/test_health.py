"""Source health: the score's factors (freshness, latency, gaps, disagreement) each move it the documented way, and
disagreement measures a source's price against the other sources quoting the same symbol."""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest

from gpt_trader.realtime.health import SourceHealth, update_disagreement

NOW = 1_700_000_000_000_000_000
MS = 1_000_000
STALE = 5.0


def healthy(name: str = "a", **fields: object) -> SourceHealth:
    h = SourceHealth(name, connected=True, last_message_ns=NOW - 100 * MS)
    for key, value in fields.items():
        setattr(h, key, value)
    return h


def score(h: SourceHealth, wall_ns: int = NOW) -> float:
    return h.score(wall_ns, stale_after_secs=STALE, latency_budget_ms=50.0, disagreement_budget_bps=50.0)


def test_score_perfect_source_is_one() -> None:
    assert score(healthy()) == 1.0


def test_score_zero_when_disconnected_stale_or_never_heard() -> None:
    assert score(healthy(connected=False)) == 0.0
    last = healthy().last_message_ns
    assert score(healthy(), last + int(STALE * 1e9)) == 1.0  # quiet for exactly `stale_after_secs`: still fresh
    assert score(healthy(), last + int(STALE * 1e9) + MS) == 0.0  # past it: stale
    never = SourceHealth("b", connected=True)
    assert never.staleness_secs(NOW) == math.inf
    assert score(never) == 0.0


def test_score_latency_halves_at_the_budget_and_falls_with_delay() -> None:
    scores = [score(healthy(delay_ewma_ns=d * MS)) for d in (0, 10, 50, 200, 1000)]
    assert scores == sorted(scores, reverse=True)
    assert len(set(scores)) == len(scores)
    assert scores[2] == pytest.approx(0.5)  # delay == budget
    assert score(healthy(delay_ewma_ns=-5 * MS)) == 1.0  # a negative estimate (offset noise) is no bonus


def test_score_gaps_each_disconnect_costs_less_than_the_last() -> None:
    scores = [score(healthy(gaps=g)) for g in range(6)]
    assert scores == sorted(scores, reverse=True)
    assert len(set(scores)) == len(scores)
    assert scores[4] == pytest.approx(0.5)  # 1 / (1 + 0.25 * 4)
    drops = [a - b for a, b in itertools.pairwise(scores)]
    assert drops == sorted(drops, reverse=True)


def test_score_disagreement_halves_at_the_budget() -> None:
    scores = [score(healthy(disagreement_bps=b)) for b in (0.0, 5.0, 50.0, 500.0)]
    assert scores == sorted(scores, reverse=True)
    assert scores[2] == pytest.approx(0.5)


def test_score_factors_multiply() -> None:
    h = healthy(delay_ewma_ns=50 * MS, gaps=4, disagreement_bps=50.0)
    assert score(h) == pytest.approx(0.125)


def test_disagreement_two_feeds_quoting_different_prices() -> None:
    a, b = healthy("alpaca"), healthy("polygon")
    a.last_price["SPY"], b.last_price["SPY"] = 100.0, 101.0
    update_disagreement([a, b], "SPY")
    # each against the other: |100 - 101| / 101 and |101 - 100| / 100, folded in with weight 0.1
    assert a.disagreement_bps == pytest.approx(0.1 * 1e4 / 101)
    assert b.disagreement_bps == pytest.approx(0.1 * 1e4 / 100)
    for _ in range(200):  # the same quotes persist: the moving average converges to the instantaneous figure
        update_disagreement([a, b], "SPY")
    assert a.disagreement_bps == pytest.approx(1e4 / 101, rel=1e-6)
    assert b.disagreement_bps == pytest.approx(100.0, rel=1e-6)
    assert score(a) < 1.0
    assert score(b) < 1.0
    # the quotes agree again: disagreement decays toward zero and the scores recover
    b.last_price["SPY"] = 100.0
    for _ in range(200):
        update_disagreement([a, b], "SPY")
    assert a.disagreement_bps < 0.01
    assert b.disagreement_bps < 0.01
    assert score(a) == pytest.approx(1.0, abs=1e-3)


def test_disagreement_outlier_among_three_stands_out() -> None:
    feeds = [healthy(n) for n in ("a", "b", "c")]
    for h, px in zip(feeds, (100.0, 100.02, 103.0), strict=True):
        h.last_price["QQQ"] = px
    for _ in range(100):
        update_disagreement(feeds, "QQQ")
    a, b, c = feeds
    assert c.disagreement_bps > 250  # ~3% away from the median of the others
    assert a.disagreement_bps < 160  # each of the others has the outlier in its reference pair
    assert b.disagreement_bps < 160
    assert score(c) < min(score(a), score(b))


def test_disagreement_needs_two_sources_quoting_the_symbol() -> None:
    a, b = healthy("a"), healthy("b")
    a.last_price["SPY"] = 100.0
    b.last_price["QQQ"] = 300.0
    update_disagreement([a, b], "SPY")
    update_disagreement([a, b], "IWM")
    assert a.disagreement_bps == 0.0
    assert b.disagreement_bps == 0.0


def test_every_source_has_a_health_series_as_soon_as_the_pipeline_starts() -> None:
    """A scrape right after `start()` (before the ticker's first pass) finds each source's health gauge: the live
    e2e test's first-bar scrape missed it on a loaded machine."""
    from prometheus_client import CollectorRegistry

    from gpt_trader.realtime import DataSource, RealtimePipeline, StreamConfig
    from gpt_trader.realtime.bus import InProcessBus
    from gpt_trader.realtime.config import RealtimeConfig

    registry = CollectorRegistry()
    configs = [
        StreamConfig(DataSource.ALPACA, ["AAA"], url="ws://127.0.0.1:9"),
        StreamConfig(DataSource.POLYGON, ["AAA"], url="ws://127.0.0.1:9"),
    ]
    env = {"APCA_API_KEY_ID": "k", "APCA_API_SECRET_KEY": "s", "POLYGON_API_KEY": "p"}

    async def go() -> dict[str, float | None]:
        p = RealtimePipeline(
            configs, RealtimeConfig(start_timeout_secs=0), bus=InProcessBus(), environ=env, registry=registry
        )
        await p.start(wait_for_data=False)
        seen = {
            name: registry.get_sample_value("gpt_trader_realtime_source_health", {"source": name})
            for name in ("alpaca", "polygon")
        }
        await p.stop()
        return seen

    seen = asyncio.run(go())
    assert seen == {"alpaca": 0.0, "polygon": 0.0}  # present, and honest: neither has connected yet
