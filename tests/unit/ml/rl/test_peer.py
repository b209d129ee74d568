"""The gym-anytrading comparison on real bundled GOOGL bars: trains on the training rows only, scores held-out."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.sources.bundled import BundledSource
from gpt_trader.ml.rl import peer as peer_module
from gpt_trader.ml.rl.config import EnvConfig, PPOConfig, RLConfig, RLEvaluationConfig
from gpt_trader.ml.rl.evaluate import FIGURES
from gpt_trader.settings import PathsConfig, Settings

TINY = RLConfig(
    symbol="SPX",  # the comparison must switch to peer_symbol by itself
    total_timesteps=128,
    env=EnvConfig(window_size=4),
    ppo=PPOConfig(n_envs=2, n_steps=64, batch_size=64, n_epochs=1, net_arch=(8,)),
    evaluation=RLEvaluationConfig(seeds=(0,), random_agent_runs=1, train_frac=0.7, embargo_bars=5, peer=True),
)


def test_compare_with_anytrading_googl_heldout_figures_finite_on_later_window(
    tmp_path: Path, mlflow_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from gpt_trader.data.features import feature_columns
    from gpt_trader.ml.rl.env import TradingEnv
    from gpt_trader.ml.rl.evaluate import annualization
    from gpt_trader.ml.rl.market import market_arrays, to_features
    from gpt_trader.ml.rl.peer import compare_with_anytrading, replay_positions
    from gpt_trader.ml.rl.stage import render_report, stage_metrics
    from gpt_trader.trading.costs import CostModel

    settings = Settings(paths=PathsConfig(models=str(tmp_path / "models"), mlflow=str(mlflow_dir)))
    bars = BundledSource().fetch("GOOGL", None, None, Timeframe.parse("1d")).tail(300)
    # Spy (the real functions run) on which rows each StocksEnv covers and which positions the peer held.
    bounds: list[tuple[int, int]] = []
    held: list[list[float]] = []
    make_env, positions_of = peer_module.make_stocks_env, peer_module.peer_positions

    def spy_env(close: Any, window: int, start: int, stop: int) -> Any:
        bounds.append((start, stop))
        return make_env(close, window, start, stop)

    def spy_positions(*args: Any) -> Any:
        positions, info = positions_of(*args)
        held.append(positions)
        return positions, info

    monkeypatch.setattr(peer_module, "make_stocks_env", spy_env)
    monkeypatch.setattr(peer_module, "peer_positions", spy_positions)

    out = compare_with_anytrading(bars, TINY, settings)

    # The held-out window, derived here from the protocol (70% train, 5-bar embargo) rather than the library's split.
    features = to_features(bars, settings.features)
    n = features.height
    train_stop = int(n * 0.7)
    test_start, test_stop = train_stop + 5, n
    market = market_arrays(features, feature_columns(settings.features), sigma_column=TINY.env.sigma_column)
    assert out["symbol"] == "GOOGL"
    assert out["timesteps"] == 128
    assert out["test_start"] == str(market.ts[test_start])
    assert out["test_end"] == str(market.ts[test_stop - 1])
    # StocksEnv trained on the training rows only (its last tick before the embargo) and was scored on the later rows.
    training, evaluation = bounds[:-1], bounds[-1]
    assert training
    assert all(stop == train_stop for _, stop in training)
    assert evaluation == (test_start, test_stop)
    assert len(held) == 1
    assert len(held[0]) == test_stop - 1 - test_start
    assert set(held[0]) <= {0.0, 1.0}

    assert set(out) == {"symbol", "timesteps", "test_start", "test_end", "ours", "ours_baselines", "peer", "run_id",
                        "ours_run_id"}  # fmt: skip
    for key in FIGURES:
        for value in (out["ours"][key], out["ours"][f"{key}_std"]):
            assert math.isfinite(value), key
        for value in (out["peer"][f"replayed_{key}"], out["peer"][f"replayed_{key}_std"]):
            assert math.isfinite(value), key
    assert math.isfinite(out["peer"]["own_total_return"])
    assert math.isfinite(out["peer"]["own_total_reward"])
    assert out["peer"]["long_share"] == pytest.approx(np.mean(held[0]))
    assert set(out["ours_baselines"]) == {"buy_and_hold", "flat", "random"}

    # Replaying the peer's held-out positions through our env on the held-out rows gives exactly its figures.
    scaled = market.standardized(range(0, train_stop))
    env = TradingEnv(
        scaled, start=test_start, stop=test_stop, env_config=TINY.env, cost_model=CostModel(settings.costs)
    )
    replayed = replay_positions(env, held[0]).figures(annualization(scaled.ts[test_start:test_stop]))
    for key, value in replayed.items():
        assert out["peer"][f"replayed_{key}"] == pytest.approx(value, rel=1e-9, abs=1e-12)
    # Buy-and-hold on the same rows: the close-to-close return of the held-out window, less one entry cost.
    close = market.close[:, 0]
    gross = close[test_stop - 1] / close[test_start] - 1.0
    assert out["ours_baselines"]["buy_and_hold"]["total_return"] == pytest.approx(gross, abs=2e-3)

    client = mlflow.MlflowClient()
    run = client.get_run(out["run_id"])
    assert run.data.tags["peer"] == "gym-anytrading StocksEnv"
    assert "peer_replayed_sharpe_ratio" in run.data.metrics
    assert client.get_run(out["ours_run_id"]).data.params["test_start"] == out["test_start"]

    # The stage's DVC metrics and report carry the comparison.
    metrics = stage_metrics({}, out)
    assert set(metrics["peer_anytrading"]) == {"ours", "peer"}
    report = render_report({}, out, TINY)
    assert "gym-anytrading StocksEnv on GOOGL" in report
