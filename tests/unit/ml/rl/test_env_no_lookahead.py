"""No look-ahead, as a property: whatever happens to the rows after t, every observation, info and reward up to t
is bit-for-bit the same, for random windows, ranges, actions, env/reward/cost settings and perturbations, in both
the single-asset `TradingEnv` and the multi-asset `PortfolioEnv`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt_trader.ml.rl.config import EnvConfig, RewardConfig
from gpt_trader.ml.rl.env import TradingEnv
from gpt_trader.ml.rl.market import MarketArrays
from gpt_trader.ml.rl.portfolio_env import PortfolioEnv
from gpt_trader.trading.config import CostConfig
from gpt_trader.trading.costs import CostModel
from tests.unit.ml.rl.conftest import synthetic_market

FRACTIONS = (-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class Case:
    """One drawn scenario: market, env range, settings, the last untouched row `cut` and the perturbed copy."""

    market: MarketArrays
    future: MarketArrays
    start: int
    stop: int
    cut: int
    env: EnvConfig
    reward: RewardConfig
    costs: CostModel
    actions: list[Any]


def perturb_after(market: MarketArrays, cut: int, rng: np.random.Generator, which: frozenset[str]) -> MarketArrays:
    """A copy whose rows > cut differ in the `which` arrays (features, close, volume, sigma); rows <= cut are equal."""
    later = np.arange(market.n_rows) > cut
    out = market
    if "features" in which:
        noise = rng.normal(0.0, 50.0, market.features.shape).astype(np.float32)
        out = replace(out, features=np.where(later[:, None, None], noise, market.features))
    if "close" in which:
        jump = np.exp(rng.normal(0.0, 1.5, market.close.shape))
        out = replace(out, close=np.where(later[:, None], market.close * jump, market.close))
    if "volume" in which:
        # Zero volume (full participation) or a random volume: both change the impact cost after t.
        vol = np.where(rng.random(market.volume.shape) < 0.5, 0.0, rng.uniform(1.0, 1e7, market.volume.shape))
        out = replace(out, volume=np.where(later[:, None], vol, market.volume))
    if "sigma" in which:
        out = replace(out, sigma=np.where(later[:, None], rng.uniform(0.0, 1.0, market.sigma.shape), market.sigma))
    return out


@st.composite
def cases(draw: st.DrawFn, *, portfolio: bool) -> Case:
    n_assets = draw(st.integers(1, 3)) if portfolio else 1
    window = draw(st.integers(1, 6))
    n = draw(st.integers(window + 3, 40))
    start = draw(st.integers(window - 1, n - 3))
    stop = draw(st.integers(start + 2, n))
    # Rows after `cut` change; cut may lie beyond the env's last row (then nothing it reads may change at all).
    cut = draw(st.integers(start, n - 2))
    fractions = tuple(sorted(draw(st.sets(st.sampled_from(FRACTIONS), min_size=2, max_size=5))))
    env = EnvConfig(
        window_size=window,
        position_fractions=fractions,
        max_position=draw(st.sampled_from([1.0, 1.5])),
        max_gross_leverage=draw(st.sampled_from([0.5, 1.0, 2.0])),
        initial_cash_usd=draw(st.sampled_from([1e4, 1e6, 1e8])),
        rebalance_threshold=draw(st.sampled_from([0.0, 0.01, 0.2])),
    )
    reward = RewardConfig(
        kind=draw(st.sampled_from(["log_return", "differential_sharpe"])),
        drawdown_penalty=draw(st.sampled_from([0.0, 1.0])),
    )
    costs = CostModel(
        CostConfig(commission_bps=draw(st.sampled_from([0.0, 1.0, 25.0])), impact_coef=draw(st.floats(0.0, 2.0)))
    )
    market = synthetic_market(n=n, n_assets=n_assets, n_features=2, seed=draw(st.integers(0, 2**16)))
    which = draw(st.sets(st.sampled_from(["features", "close", "volume", "sigma"]), min_size=1))
    future = perturb_after(market, cut, np.random.default_rng(draw(st.integers(0, 2**16))), frozenset(which))
    steps = stop - 1 - start
    if portfolio:
        weight = st.floats(-1.0, 1.0, allow_nan=False, width=32)
        vectors = st.lists(weight, min_size=n_assets, max_size=n_assets).map(lambda w: np.array(w, np.float32))
        actions = draw(st.lists(vectors, min_size=steps, max_size=steps))
    else:
        actions = draw(st.lists(st.integers(0, len(fractions) - 1), min_size=steps, max_size=steps))
    return Case(market, future, start, stop, cut, env, reward, costs, actions)


def rollout(case: Case, market: MarketArrays, env_class: type) -> list[tuple[Any, dict[str, Any], float | None]]:
    """(observation, info, reward that led there) at every decision index t <= cut the episode reaches."""
    env = env_class(
        market,
        start=case.start,
        stop=case.stop,
        env_config=case.env,
        reward_config=case.reward,
        cost_model=case.costs,
    )
    obs, info = env.reset(seed=0)
    seen: list[tuple[Any, dict[str, Any], float | None]] = [(obs, info, None)]
    for action in case.actions:
        if info["t"] >= case.cut:  # the next step would land on a row after the cut
            break
        obs, reward, terminated, truncated, info = env.step(action)
        seen.append((obs, info, reward))
        if terminated or truncated:
            break
    return seen


def assert_same_past(case: Case, env_class: type) -> None:
    original = rollout(case, case.market, env_class)
    perturbed = rollout(case, case.future, env_class)
    # Not vacuous: the episode got to the cut (or to its own end, or equity ran out, on both copies alike).
    last_t = original[-1][1]["t"]
    assert last_t == min(case.cut, case.stop - 1) or original[-1][1]["equity"] <= 0.0
    assert len(perturbed) == len(original)
    for (obs_a, info_a, rew_a), (obs_b, info_b, rew_b) in zip(original, perturbed, strict=True):
        np.testing.assert_array_equal(obs_a, obs_b, err_msg=f"observation at t={info_a['t']} saw rows > {case.cut}")
        assert info_a.keys() == info_b.keys()
        for key in info_a:
            np.testing.assert_array_equal(info_a[key], info_b[key], err_msg=f"info[{key!r}] at t={info_a['t']}")
        assert rew_a == rew_b


@settings(max_examples=60, deadline=None)
@given(case=cases(portfolio=False))
def test_trading_env_random_future_perturbation_past_unchanged(case: Case) -> None:
    assert_same_past(case, TradingEnv)


@settings(max_examples=60, deadline=None)
@given(case=cases(portfolio=True))
def test_portfolio_env_random_future_perturbation_past_unchanged(case: Case) -> None:
    assert_same_past(case, PortfolioEnv)
