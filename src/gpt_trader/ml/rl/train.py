"""`train_rl_agent`: train PPO or DQN over several seeds, evaluate on a later held-out window, track in MLflow.

Protocol: the (single-symbol, or multi-symbol for `portfolio=True`) feature rows are split chronologically with
`time_splits(train_frac, embargo)`; features are standardized with training-window statistics; agents train on
the training window only (an *episode* is one pass over it; `RLConfig.timesteps` maps episodes to SB3 steps) and
are scored once, deterministically, on the held-out window after it, beside buy-and-hold, flat and a random agent
run through the same environment and costs. Every seed is a nested MLflow run holding its metrics, its SB3
training curves and its policy as a pyfunc model; the parent run holds mean and std over seeds and the baselines.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from gpt_trader.data.features import feature_columns
from gpt_trader.ml.evaluation import time_splits
from gpt_trader.ml.rl.config import RLConfig
from gpt_trader.ml.rl.market import MarketArrays, market_arrays, to_features
from gpt_trader.trading.costs import CostModel

if TYPE_CHECKING:
    import gymnasium as gym

    from gpt_trader.settings import Settings

AGENT_TYPES = ("ppo", "dqn")


@dataclass(frozen=True, slots=True)
class HeldOutSplit:
    """Decision ranges of the training and held-out envs over a standardized `MarketArrays`."""

    market: MarketArrays
    train_start: int
    train_stop: int
    test_start: int
    test_stop: int


def split_market(market: MarketArrays, config: RLConfig) -> HeldOutSplit:
    """Chronological split with embargo; the held-out window's first observation may use earlier rows (its past)."""
    w = config.env.window_size
    split = time_splits(
        market.n_rows, train_frac=config.evaluation.train_frac, val_frac=0.0, embargo=config.evaluation.embargo_bars
    )
    if split.train.stop - (w - 1) < 2:
        raise ValueError(f"training window of {len(split.train)} rows is too short for window_size {w}")
    if len(split.test) < 3:
        raise ValueError(f"held-out window of {len(split.test)} rows is too short (need >= 3)")
    scaled = market.standardized(split.train)
    return HeldOutSplit(scaled, w - 1, split.train.stop, max(split.test.start, w - 1), split.test.stop)


def env_factory(
    split: HeldOutSplit, config: RLConfig, cost_model: CostModel, *, held_out: bool, portfolio: bool
) -> Callable[[], gym.Env[Any, Any]]:
    """A zero-argument constructor of the training or held-out env (what SB3's make_vec_env wants)."""
    from gpt_trader.ml.rl.env import TradingEnv
    from gpt_trader.ml.rl.portfolio_env import PortfolioEnv

    cls = PortfolioEnv if portfolio else TradingEnv
    start, stop = (split.test_start, split.test_stop) if held_out else (split.train_start, split.train_stop)

    def make() -> gym.Env[Any, Any]:
        return cls(
            split.market,
            start=start,
            stop=stop,
            env_config=config.env,
            reward_config=config.reward,
            cost_model=cost_model,
        )

    return make


def select_market(features: Any, settings: Settings, config: RLConfig, portfolio: bool) -> MarketArrays:
    """Arrays of the configured symbol (single-asset) or of every symbol in the frame (portfolio)."""
    names = feature_columns(settings.features)
    symbols_in = sorted(features["symbol"].unique().to_list())
    if portfolio:
        if len(symbols_in) < 2:
            raise ValueError(f"portfolio training needs at least two symbols, got {symbols_in}")
        chosen = symbols_in
    elif len(symbols_in) == 1:
        chosen = symbols_in
    elif config.symbol in symbols_in:
        chosen = [config.symbol]
    else:
        raise ValueError(f"market data holds {symbols_in}; set RLConfig.symbol to one of them (got {config.symbol!r})")
    return market_arrays(features, names, symbols=chosen, sigma_column=config.env.sigma_column)


def train_rl_agent(
    data: Any,
    agent_type: str | None = None,
    config: RLConfig | None = None,
    *,
    settings: Settings | None = None,
    portfolio: bool = False,
    run_name: str | None = None,
    log_models: bool = True,
) -> dict[str, Any]:
    """Train `agent_type` ("ppo" | "dqn") on `data` (bars or features; polars or pandas) and score it held-out.

    Returns the held-out figures (mean over `config.evaluation.seeds`, with `<figure>_std`): `sharpe_ratio`,
    `total_return`, `annual_return`, `max_drawdown`, `win_rate`, `n_trades`, `turnover`, `costs_paid`; plus
    `baselines` (buy_and_hold / flat / random figures), `per_seed`, `run_id` (parent MLflow run), `model_path`
    (first seed's agent zip) and `model_paths`, `model_uri` (first seed's pyfunc), `timesteps` and the windows.
    Settings default to code defaults (`Settings()`): models under ./models/rl, MLflow under ./mlflow.
    """
    import mlflow
    import torch

    from gpt_trader.ml.rl.agents import build_agent
    from gpt_trader.ml.rl.evaluate import FIGURES, aggregate, annualization, baseline_figures, model_policy, run_episode
    from gpt_trader.ml.rl.logging import mlflow_logger
    from gpt_trader.ml.rl.pyfunc import ObservationSpec, log_policy, log_trading_policy
    from gpt_trader.registry.tracking import iso_utc, provenance_tags, setup_experiment
    from gpt_trader.settings import Settings

    began = time.perf_counter()
    settings = settings or Settings()
    config = config or settings.ml.reinforcement
    agent_type = agent_type or config.algorithm
    if agent_type not in AGENT_TYPES:
        raise ValueError(f"agent_type must be one of {AGENT_TYPES}, got {agent_type!r}")
    if portfolio and agent_type != "ppo":
        raise ValueError("the portfolio environment has continuous actions: use agent_type='ppo'")
    torch.set_num_threads(config.torch_threads)
    cost_model = CostModel(settings.costs)

    features = to_features(data, settings.features)
    market = select_market(features, settings, config, portfolio)
    split = split_market(market, config)
    make_train = env_factory(split, config, cost_model, held_out=False, portfolio=portfolio)
    make_test = env_factory(split, config, cost_model, held_out=True, portfolio=portfolio)
    steps_per_episode = split.train_stop - 1 - split.train_start
    timesteps = config.timesteps(steps_per_episode)
    ppy = annualization(split.market.ts[split.test_start : split.test_stop])
    window = {
        "symbols": ",".join(market.symbols),
        "train_start": str(split.market.ts[split.train_start]),
        "train_end": str(split.market.ts[split.train_stop - 1]),
        "test_start": str(split.market.ts[split.test_start]),
        "test_end": str(split.market.ts[split.test_stop - 1]),
    }
    models_root = Path(settings.paths.models) / "rl" / ("portfolio" if portfolio else agent_type)
    spec = None
    heldout_features = None
    if not portfolio:
        # The serving model rebuilds observations itself: bundle the training-rows scaler and the env settings.
        spec = ObservationSpec.fit(
            market,
            range(0, split.train_stop),
            env=config.env.model_dump(mode="json"),
            reward=config.reward.model_dump(mode="json"),
            costs=settings.costs.model_dump(mode="json"),
            sigma_column=config.env.sigma_column,
        )
        heldout_features = features.filter(pl.col("symbol") == market.symbols[0]).sort("ts")

    setup_experiment(settings.registry.rl_experiment, settings.registry, settings.paths.mlflow)
    per_seed: list[dict[str, float]] = []
    model_paths: list[str] = []
    model_uris: list[str] = []
    with mlflow.start_run(run_name=run_name or f"{agent_type}-{window['symbols']}") as parent:
        mlflow.set_tags(
            {
                **provenance_tags(),
                "agent_type": agent_type,
                "portfolio": str(portfolio).lower(),
                # Fitted rows and the start of the held-out rows: the registry never scores a model before the latter.
                "training.symbols": window["symbols"],
                "training.first_ts": iso_utc(window["train_start"]),
                "training.last_ts": iso_utc(window["train_end"]),
                "training.heldout_start_ts": iso_utc(window["test_start"]),
            }
        )
        mlflow.log_params(
            {
                "agent_type": agent_type,
                "timesteps": timesteps,
                "steps_per_episode": steps_per_episode,
                "seeds": ",".join(map(str, config.evaluation.seeds)),
                "periods_per_year": round(ppy, 3),
                **window,
                **flat_params(config.model_dump(mode="json"), "rl"),
                **flat_params(settings.costs.model_dump(mode="json"), "costs"),
            }
        )
        for seed in config.evaluation.seeds:
            with mlflow.start_run(run_name=f"{agent_type}-seed{seed}", nested=True) as child:
                mlflow.set_tags({"seed": str(seed), "agent_type": agent_type})
                agent = build_agent(agent_type, make_train, config, seed)
                agent.set_logger(mlflow_logger(child.info.run_id))
                # One log line per episode (DQN) or rollout (PPO): episodes are whole passes over the window.
                agent.learn(total_timesteps=timesteps, log_interval=1)
                path = models_root / f"seed_{seed}" / "agent.zip"
                path.parent.mkdir(parents=True, exist_ok=True)
                agent.save(path)
                model_paths.append(str(path))
                trace = run_episode(make_test(), model_policy(agent))
                figures = trace.figures(ppy)
                mlflow.log_metrics({f"test_{k}": v for k, v in figures.items()})
                per_seed.append(figures)
                if log_models and spec is not None:
                    # The common interface (features frame in, positions out): what the registry serves and scores.
                    info = log_trading_policy(path, agent_type, spec, heldout_features)
                    model_uris.append(info.model_uri)
                elif log_models:
                    test_env = make_test()
                    obs0, _ = test_env.reset()
                    shape = test_env.action_space.shape or ()
                    discrete = shape == ()
                    info = log_policy(path, agent_type, obs0[None, :], discrete, 1 if discrete else int(shape[0]))
                    model_uris.append(info.model_uri)
        summary = aggregate(per_seed)
        baselines = baseline_figures(
            make_test, ppy, random_runs=config.evaluation.random_agent_runs, seed=config.evaluation.seeds[0]
        )
        mlflow.log_metrics({f"test_{k}": v for k, v in summary.items()})
        for name, figs in baselines.items():
            mlflow.log_metrics({f"baseline_{name}_{k}": v for k, v in figs.items()})
        result: dict[str, Any] = {
            **summary,
            "agent_type": agent_type,
            "portfolio": portfolio,
            "seeds": list(config.evaluation.seeds),
            "per_seed": per_seed,
            "baselines": baselines,
            "timesteps": timesteps,
            "steps_per_episode": steps_per_episode,
            "periods_per_year": ppy,
            **window,
            "run_id": parent.info.run_id,
            "model_path": model_paths[0],
            "model_paths": model_paths,
            "model_uri": model_uris[0] if model_uris else None,
            "model_uris": model_uris,
            "figures": list(FIGURES),
        }
        result["elapsed_secs"] = time.perf_counter() - began
        mlflow.log_text(json.dumps(result, indent=2, default=str), "heldout_results.json")
    return result


def flat_params(tree: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Nested config -> flat MLflow params (`rl.dqn.batch_size`), lists as strings."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, name))
        else:
            out[name] = ",".join(map(str, value)) if isinstance(value, list | tuple) else value
    return out
