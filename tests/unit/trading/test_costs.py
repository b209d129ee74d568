from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpt_trader.trading.config import CostConfig
from gpt_trader.trading.costs import CostModel

MODEL = CostModel(CostConfig(commission_bps=1.0, spread_bps=2.0, slippage_bps=0.5, impact_coef=0.1))


def test_cost_rate_components_add_up():
    assert MODEL.commission_rate() == pytest.approx(1e-4)
    assert MODEL.price_impact_rate() == pytest.approx((1.0 + 0.5) * 1e-4)
    assert MODEL.cost_rate(0.04, 0.01) == pytest.approx(2.5e-4 + 0.1 * 0.01 * 0.2)


def test_fill_price_adverse_both_sides_and_none_for_zero():
    assert MODEL.fill_price(100.0, 5) == pytest.approx(100.015)
    assert MODEL.fill_price(100.0, -5) == pytest.approx(99.985)
    assert MODEL.fill_price(100.0, 0) == 100.0


@given(
    notional=st.floats(1.0, 1e7),
    part=st.floats(0.0, 1.0),
    sigma=st.floats(0.0, 0.2),
    mid=st.floats(0.01, 1e5),
)
def test_rebalance_cost_equals_fill_loss_plus_commission(notional, part, sigma, mid):
    qty = notional / mid
    fill = MODEL.fill_price(mid, qty, part, sigma)
    cash_cost = (fill - mid) * qty + MODEL.commission(notional)
    assert MODEL.rebalance_cost(notional, part, sigma) == pytest.approx(cash_cost, rel=1e-9)


@given(a=st.floats(0, 10), b=st.floats(0, 10), part=st.floats(0, 1), sigma=st.floats(0, 0.5))
def test_rebalance_cost_monotone_in_turnover(a, b, part, sigma):
    lo, hi = sorted((a, b))
    assert MODEL.rebalance_cost(lo, part, sigma) <= MODEL.rebalance_cost(hi, part, sigma)


def test_rebalance_cost_vectorized_matches_scalar():
    turnover = np.array([0.0, 0.5, 1.0, 2.0])
    part = np.array([0.0, 0.01, 0.1, 0.5])
    sigma = np.array([0.01, 0.02, 0.03, 0.04])
    vec = MODEL.rebalance_cost(turnover, part, sigma)
    assert np.allclose(vec, [MODEL.rebalance_cost(t, p, s) for t, p, s in zip(turnover, part, sigma, strict=True)])
    assert vec[0] == 0.0
