"""StreamingAccounts == one `TradingEnv.streaming` env per symbol, bit for bit, over random bars and actions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt_trader.ml.rl.accounts import StreamingAccounts
from gpt_trader.ml.rl.config import EnvConfig
from gpt_trader.ml.rl.env import TradingEnv
from gpt_trader.trading.config import CostConfig
from gpt_trader.trading.costs import CostModel

N_FEATURES = 3
CONFIGS = {
    "default": EnvConfig(window_size=4),
    # Leverage 2 with a 2x long: the cash floor cuts buys; shorts can wipe a book out on a rally.
    "levered": EnvConfig(
        window_size=4, position_fractions=(-2.0, -0.5, 0.0, 1.0, 2.0), max_position=2.0, max_gross_leverage=2.0
    ),
    "no flat": EnvConfig(window_size=4, position_fractions=(-0.7, 0.3, 1.0)),  # inexact binary fractions
}


def envs(config: EnvConfig, n: int) -> list[TradingEnv]:
    costs = CostModel(CostConfig(commission_bps=5.0, spread_bps=10.0, slippage_bps=2.0, impact_coef=0.5))
    return [TradingEnv.streaming(N_FEATURES, env_config=config, cost_model=costs) for _ in range(n)]


def drive(config: EnvConfig, seed: int, n_symbols: int = 6, n_bars: int = 120) -> int:
    """Both sides over the same bars; returns how many accounts were wiped out (the branch was exercised)."""
    rng = np.random.default_rng(seed)
    singles = envs(config, n_symbols)
    accounts = StreamingAccounts(singles[0])
    slots = [accounts.add() for _ in range(n_symbols)]
    k = N_FEATURES * config.window_size
    close = np.full(n_symbols, 100.0)
    action: list[int | None] = [None] * n_symbols
    dead = [False] * n_symbols
    for _ in range(n_bars):
        close = close * np.exp(rng.normal(0, 0.08, n_symbols))  # wild moves: floors, wipe-outs
        volume = rng.choice([0.0, 1.0, 50.0, 5e4, -3.0, np.nan], n_symbols)
        sigma = rng.choice([0.0, 0.01, 0.2, -0.1], n_symbols)
        # Some symbols skip a bar; the dead are not advanced (as the scorer does).
        here = [i for i in range(n_symbols) if not dead[i] and rng.random() > 0.2]
        if not here:
            continue
        window = rng.normal(size=(len(here), k)).astype(np.float32)
        acts = np.array([-1 if action[i] is None else action[i] for i in here], dtype=np.int64)
        exposure, dd, wiped = accounts.advance(
            np.array([slots[i] for i in here]), close[here], volume[here], sigma[here], acts
        )
        for j, i in enumerate(here):
            obs, terminated = singles[i].advance(
                window[j], float(close[i]), float(volume[i]), float(sigma[i]), action[i]
            )
            np.testing.assert_array_equal(obs[:k], window[j])
            assert obs[k] == np.float32(exposure[j])
            assert obs[k + 1] == np.float32(dd[j])
            assert terminated == bool(wiped[j])
            assert accounts.account_state(slots[i]) == singles[i].account_state()
            dead[i] = terminated
            action[i] = int(rng.integers(len(config.position_fractions)))
    return sum(dead)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_accounts_equal_one_env_per_symbol_bit_for_bit(name: str):
    wiped = sum(drive(CONFIGS[name], seed) for seed in range(4))
    if name == "levered":
        assert wiped > 0  # the wipe-out branch ran


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), name=st.sampled_from(list(CONFIGS)))
def test_accounts_equal_envs_fuzz(seed: int, name: str):
    drive(CONFIGS[name], seed, n_symbols=3, n_bars=40)


def test_account_state_round_trips_into_a_fresh_slot():
    config = CONFIGS["levered"]
    (env,) = envs(config, 1)
    accounts = StreamingAccounts(env)
    a, b = accounts.add(), accounts.add()
    one = np.array([a])
    accounts.advance(one, np.array([100.0]), np.array([1e4]), np.array([0.01]), np.array([-1]))
    accounts.advance(one, np.array([101.0]), np.array([1e4]), np.array([0.01]), np.array([4]))
    accounts.load_account_state(b, accounts.account_state(a), 101.0, 1e4, 0.01)
    both = np.array([a, b])
    got = accounts.advance(both, np.array([99.0, 99.0]), np.array([1e4, 1e4]), np.array([0.02, 0.02]), np.array([1, 1]))
    assert all(x[0] == x[1] for x in got)
    assert accounts.account_state(a) == accounts.account_state(b)
    with pytest.raises(ValueError, match="lacks"):
        accounts.load_account_state(b, {"cash": 1.0}, 1.0, 1.0, 0.0)
