"""Behaviour: tiny agents learn a trivially profitable synthetic series (a steady uptrend: stay long)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpt_trader.ml.rl.agents import build_agent
from gpt_trader.ml.rl.config import DQNConfig, EnvConfig, PPOConfig, RLConfig
from gpt_trader.ml.rl.env import TradingEnv
from gpt_trader.ml.rl.evaluate import model_policy, run_episode
from gpt_trader.ml.rl.market import MarketArrays


def uptrend_market(n: int = 80) -> MarketArrays:
    rng = np.random.default_rng(3)
    close = 100.0 * np.exp(np.cumsum(0.005 + 0.0005 * rng.standard_normal(n)))[:, None]
    ts = (np.datetime64("2020-01-01") + np.arange(n).astype("timedelta64[D]")).astype("datetime64[us]")
    return MarketArrays(
        ts=ts,
        symbols=("UP",),
        feature_names=("noise",),
        features=rng.standard_normal((n, 1, 1)).astype(np.float32),
        close=close,
        volume=np.full((n, 1), 1e6),
        sigma=np.full((n, 1), 0.001),
    )


SEED = 0
CONFIG = RLConfig(
    learning_rate=3e-3,
    gamma=0.9,
    env=EnvConfig(window_size=2),
    ppo=PPOConfig(n_envs=4, n_steps=64, batch_size=64, n_epochs=4, net_arch=(16,)),
    dqn=DQNConfig(
        buffer_size=2_000,
        learning_starts=100,
        batch_size=32,
        train_freq=1,
        target_update_interval=100,
        exploration_fraction=0.5,
        net_arch=(16,),
    ),
)


@pytest.mark.parametrize(("agent_type", "steps"), [("ppo", 1_536), ("dqn", 1_200)])
def test_agent_steady_uptrend_learns_to_stay_long(agent_type: str, steps: int) -> None:
    torch.set_num_threads(1)
    market = uptrend_market()
    agent = build_agent(agent_type, lambda: TradingEnv(market, env_config=CONFIG.env), CONFIG, seed=SEED)
    agent.learn(steps)
    trace = run_episode(TradingEnv(market, env_config=CONFIG.env), model_policy(agent))
    hold = run_episode(TradingEnv(market, env_config=CONFIG.env), lambda _obs: 2)
    assert (trace.exposure > 0.9).mean() >= 0.9
    assert trace.equity[-1] / trace.equity[0] - 1 >= 0.9 * (hold.equity[-1] / hold.equity[0] - 1)
