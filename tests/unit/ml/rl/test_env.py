"""Trading environments: API conformance, accounting invariants, costs only on position changes, no look-ahead."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt_trader.ml.rl.config import EnvConfig, RewardConfig
from gpt_trader.ml.rl.env import TradingEnv
from gpt_trader.ml.rl.market import MarketArrays
from gpt_trader.ml.rl.portfolio_env import PortfolioEnv
from gpt_trader.trading.config import CostConfig
from gpt_trader.trading.costs import CostModel
from tests.unit.ml.rl.conftest import synthetic_market

ENV = EnvConfig(window_size=4, position_fractions=(-1.0, -0.5, 0.0, 0.5, 1.0))


def test_trading_env_checkers_pass(market: MarketArrays) -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test...
        warnings.filterwarnings("ignore", message=".*render.*")  # ...except "no render modes / no spec"
        check_env(TradingEnv(market, env_config=ENV), skip_render_check=True)
        sb3_check_env(TradingEnv(market, env_config=ENV))


def test_portfolio_env_checkers_pass() -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    market = synthetic_market(n_assets=3)
    check_env(PortfolioEnv(market, env_config=ENV), skip_render_check=True)
    sb3_check_env(PortfolioEnv(market, env_config=ENV))


@settings(max_examples=60, deadline=None)
@given(
    actions=st.lists(st.integers(0, 4), min_size=1, max_size=59),
    seed=st.integers(0, 10_000),
    impact=st.floats(0.0, 2.0),
)
def test_trading_env_random_actions_accounting_invariants_hold(actions: list[int], seed: int, impact: float) -> None:
    market = synthetic_market(seed=seed)
    costs = CostModel(CostConfig(impact_coef=impact))
    env = TradingEnv(market, env_config=ENV, cost_model=costs)
    _, info = env.reset()
    held = 2  # the flat action: the initial book
    paid = 0.0
    for a in actions:
        t, shares_before, equity_before = info["t"], info["shares"], info["equity"]
        _, reward, terminated, truncated, info = env.step(a)
        price = market.close[info["t"], 0]
        # equity = cash + positions value, exactly.
        assert info["equity"] == pytest.approx(info["cash"] + info["shares"] * price, rel=1e-12)
        traded = info["shares"] - shares_before
        if a == held:
            assert info["step_cost"] == 0.0  # a hold never trades or pays
            assert traded == 0.0
        else:
            # The cost is the cost model's rate on the traded notional, at the bar's participation and sigma.
            notional = abs(traded) * market.close[t, 0]
            rate = costs.cost_rate(abs(traded) / market.volume[t, 0], market.sigma[t, 0])
            assert info["step_cost"] == pytest.approx(notional * rate, rel=1e-9, abs=1e-9)
            if traded != 0.0:
                assert info["step_cost"] > 0.0
            # Turnover as a fraction of equity gives the same figure through rebalance_cost.
            frac = notional / equity_before
            expect = costs.rebalance_cost(frac, abs(traded) / market.volume[t, 0], market.sigma[t, 0]) * equity_before
            assert info["step_cost"] == pytest.approx(expect, rel=1e-9, abs=1e-9)
            # A trade lands within max_position of equity (holds may drift with the price, as real books do).
            assert abs(info["shares"] * market.close[t, 0]) <= equity_before * (1 + 1e-9)
        held = a
        paid += info["step_cost"]
        assert info["costs_paid"] == pytest.approx(paid)
        assert info["cash"] >= -1e-6  # no leverage: cash never negative
        assert 0.0 <= info["drawdown"] < 1.0
        assert np.isfinite(reward)
        if terminated or truncated:
            break


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    block=st.integers(1, 70),
    kind=st.sampled_from(["log_return", "differential_sharpe"]),
    penalty=st.sampled_from([0.0, 1.5]),
    leverage=st.sampled_from([0.5, 1.0, 2.0]),
    zero_volume=st.booleans(),
    actions=st.lists(st.integers(0, 4), min_size=30, max_size=120),
)
def test_trading_env_step_fast_path_equals_reference_helpers(
    seed: int, block: int, kind: str, penalty: float, leverage: float, zero_volume: bool, actions: list[int]
) -> None:
    """`step` builds its observation (a row of a copied block), info and log-return reward inline: each equals
    what `_observation`, `_info` and `RewardShaper.reward` give for the same state, bit for bit, across block
    boundaries and episodes (20 steps each, so every example resets); and no observation handed out earlier ever
    changes afterwards."""
    from unittest import mock

    from gpt_trader.ml.rl import env as env_module
    from gpt_trader.ml.rl.reward import RewardShaper

    market = synthetic_market(n=24, seed=seed)
    if zero_volume:  # full participation on some bars
        market = replace(market, volume=np.where(np.arange(market.n_rows)[:, None] % 3 == 0, 0.0, market.volume))
    reward_config = RewardConfig(kind=kind, drawdown_penalty=penalty)  # type: ignore[arg-type]
    config = EnvConfig(window_size=4, position_fractions=ENV.position_fractions, max_gross_leverage=leverage)
    with mock.patch.object(env_module, "OBS_BLOCK", block):
        env = TradingEnv(market, env_config=config, reward_config=reward_config, cost_model=CostModel())
        shaper = RewardShaper(reward_config)
        obs, info = env.reset()
        handed_out = [(obs, obs.copy())]
        for a in actions:
            obs, reward, terminated, truncated, new_info = env.step(a)
            handed_out.append((obs, obs.copy()))
            np.testing.assert_array_equal(obs, env._observation())
            assert obs.dtype == np.float32
            assert env.observation_space.contains(obs)
            assert new_info == env._info()
            growth = new_info["equity"] / info["equity"] if info["equity"] > 0 else 0.0
            assert reward == shaper.reward(growth, new_info["drawdown"] - info["drawdown"])
            info = new_info
            if terminated or truncated:
                obs, info = env.reset()
                shaper.reset()
                handed_out.append((obs, obs.copy()))
    for kept, at_the_time in handed_out:
        np.testing.assert_array_equal(kept, at_the_time)


@pytest.mark.parametrize("window", [1, 3])
def test_trading_env_streaming_advance_matches_the_whole_series_env(market: MarketArrays, window: int) -> None:
    """Fed one bar at a time, a `streaming` env hands out the whole-series env's observations (each a fresh
    array that later bars leave alone); window 1 included (its window matrix once came back read-only)."""
    config = EnvConfig(window_size=window, position_fractions=ENV.position_fractions)
    whole = TradingEnv(market, env_config=config)
    live = TradingEnv.streaming(market.features.shape[2], env_config=config)
    windows = np.lib.stride_tricks.sliding_window_view(market.features[:, 0, :], window, axis=0)
    actions = [4, 4, 0, 2, 3, 1, 1, 4] * 5

    def advance(t: int, action: int | None) -> np.ndarray:
        row = np.ascontiguousarray(windows[t - window + 1].T).ravel()  # rows t-window+1..t, oldest first
        bar = float(market.close[t, 0]), float(market.volume[t, 0]), float(market.sigma[t, 0])
        obs, _ = live.advance(row, *bar, action)
        return obs

    expected, _ = whole.reset()
    handed_out = [(advance(window - 1, None), expected)]
    for i, a in enumerate(actions):
        expected = whole.step(a)[0]
        handed_out.append((advance(window + i, a), expected.copy()))
    for got, want in handed_out:
        np.testing.assert_array_equal(got, want)


def test_trading_env_flat_forever_keeps_initial_cash(market: MarketArrays) -> None:
    env = TradingEnv(market, env_config=ENV)
    _, info = env.reset()
    done = False
    while not done:
        _, reward, term, trunc, info = env.step(2)
        assert reward == 0.0
        done = term or trunc
    assert info["equity"] == ENV.initial_cash_usd
    assert info["trades"] == 0
    assert info["costs_paid"] == 0.0


def test_trading_env_future_data_perturbed_past_observations_unchanged(market: MarketArrays) -> None:
    cut = 30
    rng = np.random.default_rng(1)
    future = replace(
        market,
        features=np.where(
            np.arange(market.n_rows)[:, None, None] > cut, rng.normal(size=market.features.shape), market.features
        ).astype(np.float32),
        close=np.where(np.arange(market.n_rows)[:, None] > cut, market.close * 3.0, market.close),
        volume=np.where(np.arange(market.n_rows)[:, None] > cut, 1.0, market.volume),
        sigma=np.where(np.arange(market.n_rows)[:, None] > cut, 0.5, market.sigma),
    )
    observed = []
    for m in (market, future):
        env = TradingEnv(m, env_config=ENV)
        obs, _ = env.reset()
        seq = [obs]
        for a in [4, 0, 2, 3] * 10:
            obs, _, _, _, info = env.step(a)
            if info["t"] > cut:
                break
            seq.append(obs)
        observed.append(np.stack(seq))
    # Every observation taken at t <= cut (features, exposure, drawdown) ignores everything after t.
    np.testing.assert_array_equal(observed[0], observed[1])


def test_trading_env_window_rows_are_the_last_window_features(market: MarketArrays) -> None:
    env = TradingEnv(market, env_config=ENV, start=10)
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs[:-2], market.features[7:11, 0].ravel())


def test_trading_env_bad_input_raises(market: MarketArrays) -> None:
    with pytest.raises(ValueError, match="window_size"):
        TradingEnv(market, env_config=ENV, start=1)
    with pytest.raises(ValueError, match="single-asset"):
        TradingEnv(synthetic_market(n_assets=2), env_config=ENV)
    env = TradingEnv(market, env_config=ENV)
    env.reset()
    with pytest.raises(ValueError, match="outside Discrete"):
        env.step(7)
    with pytest.raises(ValueError, match="exceed max_position"):
        EnvConfig(position_fractions=(0.0, 2.0))


def test_trading_env_leverage_one_cuts_buy_so_cash_stays_non_negative(market: MarketArrays) -> None:
    env = TradingEnv(market, env_config=EnvConfig(window_size=4, position_fractions=(0.0, 1.0)))
    env.reset()
    _, _, _, _, info = env.step(1)
    assert 0.0 <= info["cash"] < 1.0  # fully invested, costs paid out of the position size
    assert info["step_cost"] > 0.0


@settings(max_examples=30, deadline=None)
@given(
    weights=st.lists(st.lists(st.floats(-1.0, 1.0), min_size=3, max_size=3), min_size=1, max_size=40),
    seed=st.integers(0, 1000),
)
def test_portfolio_env_random_weights_accounting_invariants_hold(weights: list[list[float]], seed: int) -> None:
    market = synthetic_market(n_assets=3, seed=seed)
    env = PortfolioEnv(market, env_config=EnvConfig(window_size=4, max_gross_leverage=1.0))
    _, info = env.reset()
    paid = 0.0
    for w in weights:
        t, shares_before, equity_before = info["t"], info["shares"], info["equity"]
        _, _, term, trunc, info = env.step(np.array(w, np.float32))
        price = market.close[info["t"]]
        assert info["equity"] == pytest.approx(info["cash"] + float(info["shares"] @ price), rel=1e-12)
        traded = info["shares"] - shares_before
        expect = float((env.trade_costs(traded, t)).sum())
        assert info["step_cost"] == pytest.approx(expect, rel=1e-12, abs=1e-12)
        assert (info["step_cost"] > 0) == bool(np.any(traded != 0))
        paid += info["step_cost"]
        assert info["costs_paid"] == pytest.approx(paid)
        assert info["cash"] >= -1e-6
        # Gross exposure after the trade: leverage 1, plus what held (sub-threshold) assets may differ by.
        gross = float(np.abs(info["shares"] * market.close[t]).sum()) / equity_before
        assert gross <= 1.0 + 3 * env.config.rebalance_threshold + 1e-9
        if term or trunc:
            break


def test_portfolio_env_same_weights_twice_second_step_is_a_hold() -> None:
    market = synthetic_market(n_assets=2)
    env = PortfolioEnv(market, env_config=EnvConfig(window_size=4, rebalance_threshold=0.05))
    env.reset()
    action = np.array([0.5, 0.25], np.float32)
    _, _, _, _, first = env.step(action)
    _, _, _, _, second = env.step(action)
    assert first["step_cost"] > 0.0
    assert second["step_cost"] == 0.0
    assert second["trades"] == first["trades"]


def test_reward_differential_sharpe_matches_hand_computation() -> None:
    from gpt_trader.ml.rl.reward import RewardShaper

    shaper = RewardShaper(RewardConfig(kind="differential_sharpe", dsr_eta=0.5))
    assert shaper.reward(1.01, 0.0) == 0.0  # no variance estimate yet: A=B=0
    # After r=0.01: A = 0.005, B = 0.00005. Next r=0.02: dA = 0.015, dB = 0.00035.
    a, b, da, db = 0.005, 0.00005, 0.015, 0.0004 - 0.00005
    expected = (b * da - 0.5 * a * db) / (b - a * a) ** 1.5
    assert shaper.reward(1.02, 0.0) == pytest.approx(expected)


def test_reward_drawdown_penalty_only_on_new_drawdown() -> None:
    from gpt_trader.ml.rl.reward import RewardShaper

    shaper = RewardShaper(RewardConfig(scale=100.0, drawdown_penalty=2.0))
    assert shaper.reward(0.99, 0.01) == pytest.approx(100 * np.log(0.99) - 2.0 * 100 * 0.01)
    assert shaper.reward(1.005, -0.005) == pytest.approx(100 * np.log(1.005))
