"""Shadow evidence bookkeeping: continuing sessions compound, replayed bars never count twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gpt_trader.trading.costs import CostModel
from gpt_trader.trading.shadow import ShadowEvidence, ShadowPair, SoloBook

D0 = datetime(2018, 6, 1, tzinfo=UTC)


def pair(first: int, bars: int, mine: float, theirs: float, prior: ShadowEvidence | None) -> ShadowPair:
    books = [SoloBook.new(CostModel(), Decimal(100_000)) for _ in range(2)]
    p = ShadowPair("m", "2", "1", *books, bars=bars, first_bar=D0 + timedelta(days=first), prior=prior)
    p.last_bar = D0 + timedelta(days=first + bars - 1)
    # Returns as the books would show them: cash moved directly.
    p.challenger.portfolio.cash = Decimal(100_000) * Decimal(str(1 + mine))
    p.champion.portfolio.cash = Decimal(100_000) * Decimal(str(1 + theirs))
    return p


def test_shadow_evidence_tags_round_trip():
    ev = ShadowEvidence("1", 30, D0, D0 + timedelta(days=29), 0.0123, -0.004)
    assert ShadowEvidence.from_tags(ev.to_tags()) == ev
    assert ShadowEvidence.from_tags({"shadow.bars": "x"}) is None


def test_shadow_pair_continuing_a_prior_session_compounds():
    prior = ShadowEvidence("1", 10, D0, D0 + timedelta(days=9), 0.10, 0.0)
    out = pair(20, 5, 0.10, 0.02, prior).to_publish()
    assert out is not None
    assert out.bars == 15
    assert out.first_bar == D0
    assert out.challenger_return == pytest.approx(0.21)
    assert out.champion_return == pytest.approx(0.02)


def test_shadow_pair_replaying_counted_bars_keeps_the_larger_sample_only():
    prior = ShadowEvidence("1", 10, D0, D0 + timedelta(days=9), 0.10, 0.0)
    assert pair(0, 5, 0.5, 0.0, prior).to_publish() is None  # fewer bars over the same days: prior stays
    bigger = pair(0, 12, 0.05, 0.01, prior).to_publish()
    assert bigger is not None
    assert bigger.bars == 12
    assert bigger.challenger_return == pytest.approx(0.05)


def test_shadow_pair_prior_against_another_champion_is_replaced():
    prior = ShadowEvidence("0", 100, D0, D0 + timedelta(days=99), 0.3, 0.1)
    out = pair(200, 5, 0.01, 0.0, prior).to_publish()
    assert out is not None
    assert out.bars == 5
