"""train_rl_agent end to end on a small real slice: held-out figures, MLflow runs, pyfunc model, seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.sources.bundled import BundledSource
from gpt_trader.ml.rl.config import DQNConfig, EnvConfig, PPOConfig, RLConfig, RLEvaluationConfig
from gpt_trader.settings import PathsConfig, Settings

TINY = RLConfig(
    total_timesteps=256,
    env=EnvConfig(window_size=4),
    ppo=PPOConfig(n_envs=2, n_steps=64, batch_size=64, n_epochs=1, net_arch=(8,)),
    dqn=DQNConfig(buffer_size=500, learning_starts=64, batch_size=16, target_update_interval=64, net_arch=(8,)),
    evaluation=RLEvaluationConfig(seeds=(0, 1), random_agent_runs=2),
)


@pytest.fixture(scope="module")
def spx() -> pl.DataFrame:
    return BundledSource().fetch("SPX", None, None, Timeframe.parse("1d")).tail(300)


def settings_in(tmp: Path) -> Settings:
    return Settings(paths=PathsConfig(models=str(tmp / "models"), mlflow=str(tmp / "mlflow")))


@pytest.mark.slow
def test_train_rl_agent_dqn_two_seeds_logs_runs_and_loadable_pyfunc(spx: pl.DataFrame, tmp_path: Path) -> None:
    import mlflow

    settings = settings_in(tmp_path)
    result = train_rl_agent_(spx, "dqn", settings)
    assert result["seeds"] == [0, 1]
    assert len(result["per_seed"]) == 2
    values = [r["sharpe_ratio"] for r in result["per_seed"]]
    assert result["sharpe_ratio"] == pytest.approx(np.mean(values))
    assert result["sharpe_ratio_std"] == pytest.approx(np.std(values, ddof=1))
    assert set(result["baselines"]) == {"buy_and_hold", "flat", "random"}
    assert result["baselines"]["flat"]["total_return"] == 0.0
    assert result["test_start"] > result["train_end"]
    client = mlflow.MlflowClient()
    parent = client.get_run(result["run_id"])
    assert parent.data.params["seeds"] == "0,1"
    assert "version.stable-baselines3" in parent.data.tags
    assert "test_sharpe_ratio_std" in parent.data.metrics
    assert "baseline_buy_and_hold_sharpe_ratio" in parent.data.metrics
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result['run_id']}'"
    )
    assert {c.data.tags["seed"] for c in children} == {"0", "1"}
    # SB3's own metrics reached MLflow through the logger output format.
    assert any("train_loss" in c.data.metrics for c in children)
    model = mlflow.pyfunc.load_model(result["model_uri"])
    from gpt_trader.ml.rl.dqn import EnhancedDQN
    from gpt_trader.ml.rl.env import window_matrix

    agent = EnhancedDQN.load(result["model_path"], device="cpu")
    # The registered interface: a features frame in, per (ts, symbol) action and position target out.
    example = model.input_example
    predicted = model.predict(example)
    w = TINY.env.window_size
    assert list(predicted.columns) == ["ts", "symbol", "action", "position"]
    assert len(predicted) == len(example) - w + 1
    assert set(predicted["position"]) <= {-1.0, 0.0, 1.0}
    # The first decision is taken from a flat book on the window scaled with the training-rows statistics.
    spec = model.unwrap_python_model().spec
    raw = example[list(spec.feature_names)].to_numpy(dtype=np.float64)[:w]
    scaled = np.clip((raw - np.asarray(spec.scaler_mean)) / np.asarray(spec.scaler_std), -10, 10).astype(np.float32)
    obs = np.concatenate([window_matrix(scaled, w)[0], np.zeros(2, np.float32)])
    expected, _ = agent.predict(obs[None, :], deterministic=True)
    assert predicted["action"].iloc[0] == int(expected[0])


def train_rl_agent_(data: pl.DataFrame, agent_type: str, settings: Settings, **kw: object) -> dict:
    from gpt_trader.ml.rl.train import train_rl_agent

    return train_rl_agent(data, agent_type, TINY, settings=settings, **kw)  # type: ignore[arg-type]


def test_train_rl_agent_portfolio_ppo_three_symbols_runs(tmp_path: Path) -> None:
    source = BundledSource()
    bars = pl.concat([source.fetch(s, None, None, Timeframe.parse("1d")).tail(200) for s in ("SPX", "IXIC", "GOOGL")])
    from gpt_trader.ml.rl.train import train_rl_agent

    config = TINY.model_copy(update={"evaluation": RLEvaluationConfig(seeds=(0,), random_agent_runs=1)})
    result = train_rl_agent(bars, "ppo", config, settings=settings_in(tmp_path), portfolio=True, log_models=False)
    assert result["symbols"] == "GOOGL,IXIC,SPX"
    assert np.isfinite(result["sharpe_ratio"])


def test_train_rl_agent_bad_inputs_fail_naming_the_problem(spx: pl.DataFrame, tmp_path: Path) -> None:
    from gpt_trader.core.errors import DataError
    from gpt_trader.ml.rl.train import train_rl_agent

    with pytest.raises(ValueError, match="agent_type"):
        train_rl_agent(spx, "a2c", TINY, settings=settings_in(tmp_path))
    with pytest.raises(ValueError, match="continuous"):
        train_rl_agent(spx, "dqn", TINY, settings=settings_in(tmp_path), portfolio=True)
    with pytest.raises(DataError, match="OHLCV"):
        train_rl_agent(spx.drop("volume"), "ppo", TINY, settings=settings_in(tmp_path))
    with pytest.raises(DataError, match="polars or pandas"):
        train_rl_agent([1, 2, 3], "ppo", TINY, settings=settings_in(tmp_path))


def test_rl_config_episodes_map_to_timesteps() -> None:
    assert RLConfig(episodes=3).timesteps(100) == 300
    assert RLConfig(episodes=3, total_timesteps=50).timesteps(100) == 50
    assert RLConfig().episodes == 1000
    assert RLConfig().algorithm == "ppo"


def test_cli_train_rl_bad_agent_exits_2() -> None:
    from typer.testing import CliRunner

    from gpt_trader.cli import app

    result = CliRunner().invoke(app, ["train", "rl", "--agent", "a2c"])
    assert result.exit_code == 2, result.output
    assert "--agent" in result.output


def test_market_pandas_bars_with_date_index_build_features() -> None:
    from gpt_trader.ml.rl.market import to_features

    bars = BundledSource().fetch("SPX", None, None, Timeframe.parse("1d")).tail(150)
    pdf = bars.select("ts", "open", "high", "low", "close", "volume").to_pandas().set_index("ts")
    pdf.columns = [c.capitalize() for c in pdf.columns]
    features = to_features(pdf, Settings().features)
    assert features.height > 0
    assert "rsi" in features.columns
