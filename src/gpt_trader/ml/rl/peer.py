"""The peer baseline: gym-anytrading's `StocksEnv` on the same rows, same PPO settings and steps, same seeds.

StocksEnv observes a window of raw (close, close diff), has two actions (Sell/Buy) and two positions where
"Short" earns nothing (it is long/flat in effect), trades one bar after the observation (the action at tick t
fills at close_{t+1}), rewards raw price differences and charges fixed 1% bid / 0.5% ask fees on closed longs.
We train PPO on it over our training window, then score its held-out positions twice: by its own `total_profit`
and replayed through our `TradingEnv` (our cost model, long = fraction 1.0, flat = 0.0), so the difference the
realism makes is visible beside our own agent's figures.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from gpt_trader.ml.rl.config import RLConfig
from gpt_trader.ml.rl.evaluate import EpisodeTrace, run_episode
from gpt_trader.ml.rl.train import HeldOutSplit


def anytrading_frame(close: npt.NDArray[np.float64]) -> Any:
    """The pandas frame StocksEnv reads (only `Close` is used)."""
    import pandas as pd

    return pd.DataFrame({"Close": np.asarray(close, dtype=np.float64)})


def make_stocks_env(close: npt.NDArray[np.float64], window: int, start: int, stop: int) -> Any:
    """StocksEnv whose first decision observes rows start-window+1..start and whose last tick is row stop-1."""
    from gym_anytrading.envs import StocksEnv

    return StocksEnv(df=anytrading_frame(close), window_size=window, frame_bound=(start, stop))


def peer_positions(
    model: Any, close: npt.NDArray[np.float64], window: int, start: int, stop: int
) -> tuple[list[float], dict[str, Any]]:
    """Exposure (1 long, 0 "short" = flat) the policy holds from each row in [start, stop - 1), and StocksEnv's info."""
    env = make_stocks_env(close, window, start, stop)
    obs, _ = env.reset(seed=0)
    # Row `start` is held flat: the peer's first action only fills at the next tick.
    positions = [0.0]
    done = False
    info: dict[str, Any] = {}
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, _, terminated, truncated, info = env.step(int(action))
        positions.append(1.0 if info["position"].name == "Long" else 0.0)
        done = terminated or truncated
    # The position after the final tick is never held over a return.
    return positions[: stop - 1 - start], info


def replay_positions(env: Any, positions: list[float]) -> EpisodeTrace:
    """Hold `positions` (fractions present in the env's `position_fractions`) through our env and its costs."""
    fractions = list(env.config.position_fractions)
    missing = {p for p in positions if p not in fractions}
    if missing:
        raise ValueError(f"positions {sorted(missing)} are not actions of the env ({fractions})")
    actions = iter([fractions.index(p) for p in positions])
    return run_episode(env, lambda _obs: next(actions))


def train_peer(close: npt.NDArray[np.float64], split: HeldOutSplit, config: RLConfig, seed: int, timesteps: int) -> Any:
    """PPO with our PPO settings on StocksEnv over the training rows."""
    from gpt_trader.ml.rl.agents import build_ppo

    w = config.env.window_size
    model = build_ppo(lambda: make_stocks_env(close, w, split.train_start + 1, split.train_stop), config, seed)
    return model.learn(total_timesteps=timesteps)


def peer_heldout(
    model: Any, close: npt.NDArray[np.float64], split: HeldOutSplit, config: RLConfig, make_test: Any, ppy: float
) -> dict[str, float]:
    """Held-out figures of a peer-trained model: its own total profit, and our figures after replaying it."""
    positions, info = peer_positions(model, close, config.env.window_size, split.test_start, split.test_stop)
    ours = replay_positions(make_test(), positions).figures(ppy)
    return {
        "own_total_return": float(info["total_profit"]) - 1.0,
        "own_total_reward": float(info["total_reward"]),
        **{f"replayed_{k}": v for k, v in ours.items()},
        "long_share": float(np.mean(positions)),
    }


def compare_with_anytrading(data: Any, config: RLConfig, settings: Any) -> dict[str, Any]:
    """Our PPO on our env vs the same PPO (settings, steps, seeds) trained on StocksEnv, both held-out on the same rows.

    `data` must hold `config.evaluation.peer_symbol` (bars or features). Returns our figures (mean/std), the peer's
    own and replayed figures (mean/std) and the MLflow run id of the comparison.
    """
    import mlflow
    import torch

    from gpt_trader.ml.rl.evaluate import aggregate, annualization
    from gpt_trader.ml.rl.market import to_features
    from gpt_trader.ml.rl.train import env_factory, select_market, split_market, train_rl_agent
    from gpt_trader.trading.costs import CostModel

    symbol = config.evaluation.peer_symbol
    peer_config = config.model_copy(update={"symbol": symbol})
    features = to_features(data, settings.features)
    ours = train_rl_agent(features, "ppo", peer_config, settings=settings, run_name=f"peer-ours-{symbol}")
    torch.set_num_threads(config.torch_threads)
    market = select_market(features, settings, peer_config, portfolio=False)
    split = split_market(market, peer_config)
    make_test = env_factory(split, peer_config, CostModel(settings.costs), held_out=True, portfolio=False)
    ppy = annualization(split.market.ts[split.test_start : split.test_stop])
    # StocksEnv sees raw prices: the same close column, unscaled, as the peer is designed.
    close = market.close[:, 0]
    runs = []
    with mlflow.start_run(run_name=f"peer-anytrading-{symbol}") as run:
        mlflow.set_tags({"peer": "gym-anytrading StocksEnv", "symbol": symbol})
        mlflow.log_params({"timesteps": ours["timesteps"], "seeds": ",".join(map(str, config.evaluation.seeds))})
        for seed in config.evaluation.seeds:
            model = train_peer(close, split, peer_config, seed, ours["timesteps"])
            runs.append(peer_heldout(model, close, split, peer_config, make_test, ppy))
        peer = aggregate(runs)
        mlflow.log_metrics({f"peer_{k}": v for k, v in peer.items()})
    figures = ours["figures"]
    return {
        "symbol": symbol,
        "timesteps": ours["timesteps"],
        "test_start": ours["test_start"],
        "test_end": ours["test_end"],
        "ours": {k: ours[k] for k in (*figures, *(f"{f}_std" for f in figures))},
        "ours_baselines": ours["baselines"],
        "peer": peer,
        "run_id": run.info.run_id,
        "ours_run_id": ours["run_id"],
    }
