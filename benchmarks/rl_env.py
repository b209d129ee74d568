"""RL environment and PPO throughput: our `TradingEnv` against gym-anytrading's `StocksEnv` on the same GOOGL rows.

1. Env steps/s, single-threaded, random actions pre-drawn (the same sequence for both), best of `--repeat`
   (the two envs' repeats interleaved, so machine noise falls on both alike).
   Ours charges the full cost model (commission, half-spread, slippage, square-root impact) and returns an info
   dict of equity/cash/position/drawdown/trades/costs every step; StocksEnv keeps a history dict per step.
2. PPO training steps/s (SB3, CPU, torch threads = 1, DummyVecEnv) with the default `PPOConfig` (8 envs) on each
   env, then faster settings (more envs, one epoch, bigger minibatches, a smaller net) on ours.
Targets: env step <= 10 us (>= 100k steps/s) and >= StocksEnv; PPO >= 2,500 steps/s at defaults, 8,000+ with
tuned settings. Figures and ratios are printed; nothing is asserted.

    python benchmarks/rl_env.py [--env-steps 200000] [--ppo-steps 16384] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.config import FeaturesConfig
from gpt_trader.data.features import feature_columns
from gpt_trader.data.sources.bundled import BundledSource
from gpt_trader.ml.rl.config import EnvConfig, PPOConfig, RLConfig
from gpt_trader.ml.rl.env import TradingEnv
from gpt_trader.ml.rl.market import MarketArrays, market_arrays, to_features
from gpt_trader.ml.rl.peer import make_stocks_env

TARGET_ENV_STEPS_PER_SEC = 100_000
TARGET_PPO_DEFAULT = 2_500
TARGET_PPO_TUNED = 8_000


def load_market() -> MarketArrays:
    """GOOGL daily features, standardized over all rows (throughput does not care about the split)."""
    config = FeaturesConfig()
    bars = BundledSource().fetch("GOOGL", None, None, Timeframe.parse("1d"))
    market = market_arrays(to_features(bars, config), feature_columns(config))
    return market.standardized(range(market.n_rows))


def env_steps_per_sec(makers: dict[str, Callable[[], Any]], actions: list[int], repeat: int) -> dict[str, float]:
    """Best-of-`repeat` steps/s of a random-action loop per env (resets included, as in training).

    The envs' repeats are interleaved, in alternating order, with garbage collected before each, so a noisy
    stretch of a shared machine (or another env's garbage) falls on both sides alike rather than on whichever
    env happened to run during it.
    """
    best = dict.fromkeys(makers, 0.0)
    names = list(makers)
    for i in range(repeat):
        for name in names if i % 2 == 0 else names[::-1]:
            env = makers[name]()
            env.reset(seed=0)
            gc.collect()
            t0 = time.perf_counter()
            for a in actions:
                _, _, terminated, truncated, _ = env.step(a)
                if terminated or truncated:
                    env.reset()
            best[name] = max(best[name], len(actions) / (time.perf_counter() - t0))
    return best


def ppo_steps_per_sec(make: Callable[[], Any], ppo: PPOConfig, steps: int) -> float:
    """PPO learn() throughput (collection + updates) after a short warm-up."""
    from gpt_trader.ml.rl.agents import build_agent

    config = RLConfig(ppo=ppo)
    agent = build_agent("ppo", make, config, seed=0)
    agent.learn(ppo.n_envs * ppo.n_steps)  # warm-up: first rollout and torch initialization
    t0 = time.perf_counter()
    agent.learn(steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - t0)


def main() -> None:
    """Run both benchmarks and print figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-steps", type=int, default=200_000)
    parser.add_argument("--ppo-steps", type=int, default=16_384)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)

    market = load_market()
    env_config = EnvConfig(window_size=16, position_fractions=(0.0, 1.0))  # 2 actions, like StocksEnv
    n, w = market.n_rows, env_config.window_size
    close = market.close[:, 0]

    def ours() -> TradingEnv:
        return TradingEnv(market, env_config=env_config)

    def peer() -> Any:
        return make_stocks_env(close, w, w, n)

    print(
        f"data: GOOGL daily, {n} rows, window {w}, obs dim ours {ours().observation_space.shape[0]}, "
        f"peer {int(np.prod(peer().observation_space.shape))}; torch threads 1"
    )
    actions = np.random.default_rng(0).integers(0, 2, args.env_steps).tolist()
    sps = env_steps_per_sec({"ours": ours, "peer": peer}, actions, args.repeat)
    ours_sps, peer_sps = sps["ours"], sps["peer"]
    print(
        f"env step  ours   {ours_sps:>10,.0f} steps/s  ({1e6 / ours_sps:.2f} us/step; target >= "
        f"{TARGET_ENV_STEPS_PER_SEC:,} = <= 10 us)"
    )
    print(
        f"env step  peer   {peer_sps:>10,.0f} steps/s  ({1e6 / peer_sps:.2f} us/step)  "
        f"ours/peer {ours_sps / peer_sps:.2f}x"
    )

    default = PPOConfig()
    ours_ppo = ppo_steps_per_sec(ours, default, args.ppo_steps)
    peer_ppo = ppo_steps_per_sec(peer, default, args.ppo_steps)
    print(
        f"PPO default ({default.n_envs} envs, n_steps {default.n_steps}, batch {default.batch_size}, "
        f"epochs {default.n_epochs}, net {list(default.net_arch)}):"
    )
    print(
        f"  ours {ours_ppo:>8,.0f} steps/s (target >= {TARGET_PPO_DEFAULT:,})   peer {peer_ppo:>8,.0f} steps/s   "
        f"ours/peer {ours_ppo / peer_ppo:.2f}x"
    )
    tuned_settings = [
        PPOConfig(n_envs=16, n_steps=256, batch_size=1024, n_epochs=1, net_arch=(64, 64)),
        PPOConfig(n_envs=16, n_steps=512, batch_size=2048, n_epochs=1, net_arch=(32, 32)),
        PPOConfig(n_envs=32, n_steps=256, batch_size=4096, n_epochs=1, net_arch=(32, 32)),
    ]
    for tuned in tuned_settings:
        sps = ppo_steps_per_sec(ours, tuned, max(args.ppo_steps, 2 * tuned.n_envs * tuned.n_steps))
        print(
            f"  tuned ours ({tuned.n_envs} envs, n_steps {tuned.n_steps}, batch {tuned.batch_size}, epochs "
            f"{tuned.n_epochs}, net {list(tuned.net_arch)}): {sps:>8,.0f} steps/s (target >= {TARGET_PPO_TUNED:,})"
        )


if __name__ == "__main__":
    main()
