"""The portfolio policy as an MLflow pyfunc: logged with a signature, loaded back, predicting weights per asset."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpt_trader.ml.rl.config import EnvConfig, PPOConfig, RLConfig
from gpt_trader.ml.rl.portfolio_env import PortfolioEnv
from tests.unit.ml.rl.conftest import synthetic_market

N_ASSETS = 3


def test_log_policy_portfolio_ppo_loads_back_and_predicts_weights(tmp_path: Path, mlflow_dir: Path) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model
    from mlflow.types import DataType

    from gpt_trader.ml.rl.agents import build_ppo
    from gpt_trader.ml.rl.pyfunc import SB3PolicyModel, log_policy
    from gpt_trader.registry.config import RegistryConfig
    from gpt_trader.registry.tracking import setup_experiment

    market = synthetic_market(n=40, n_assets=N_ASSETS, n_features=2)
    env_config = EnvConfig(window_size=4)
    config = RLConfig(env=env_config, ppo=PPOConfig(n_envs=1, n_steps=32, batch_size=32, n_epochs=1, net_arch=(8,)))

    def make_env() -> PortfolioEnv:
        return PortfolioEnv(market, env_config=env_config)

    agent = build_ppo(make_env, config, seed=0).learn(total_timesteps=32)
    path = tmp_path / "agent.zip"
    agent.save(path)
    env = make_env()
    obs0, _ = env.reset()
    observations = [obs0]
    for _ in range(7):
        obs, *_ = env.step(env.action_space.sample())
        observations.append(obs)
    batch = np.stack(observations).astype(np.float32)
    dim = env.observation_space.shape[0]
    assert batch.shape == (8, dim)

    setup_experiment("rl-pyfunc-test", RegistryConfig(), mlflow_dir)
    with mlflow.start_run() as run:
        info = log_policy(path, "ppo", batch, discrete=False, n_outputs=N_ASSETS)
    assert info.run_id == run.info.run_id

    model = mlflow.pyfunc.load_model(info.model_uri)
    # The logged signature: a float32 observation tensor of the env's width in, one float weight per asset out.
    signature = model.metadata.signature
    assert signature is not None
    (tensor,) = signature.inputs.inputs
    assert tensor.type == np.dtype(np.float32)
    assert tuple(tensor.shape) == (-1, dim)
    assert signature.outputs.input_names() == [f"weight_{i}" for i in range(N_ASSETS)]
    assert signature.outputs.input_types() == [DataType.double] * N_ASSETS
    # The input example travels with the model (the first five observations).
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    example = Model.load(info.model_uri).load_input_example(str(local))
    np.testing.assert_array_equal(np.asarray(example, dtype=np.float32), batch[:5])
    # Requirements are pinned explicitly (no slow inference by re-importing the model in a subprocess).
    requirements = (local / "requirements.txt").read_text().split()
    assert f"stable-baselines3=={version('stable-baselines3')}" in requirements
    assert f"torch=={version('torch')}" in requirements

    predicted = model.predict(batch)
    assert isinstance(predicted, pd.DataFrame)
    assert predicted.shape == (len(batch), N_ASSETS)
    assert list(predicted.columns) == [f"weight_{i}" for i in range(N_ASSETS)]
    # The same deterministic actions as the agent itself, inside the env's action bounds.
    expected, _ = agent.predict(batch, deterministic=True)
    np.testing.assert_allclose(predicted.to_numpy(), expected, rtol=1e-6)
    assert ((predicted.to_numpy() >= -1.0) & (predicted.to_numpy() <= 1.0)).all()
    # One observation is a batch of one; a bare vector or a wrong width is refused by the signature check.
    assert model.predict(batch[:1]).shape == (1, N_ASSETS)
    for bad in (batch[0], batch[:, :-1]):
        with pytest.raises(MlflowException, match=r"(?i)shape"):
            model.predict(bad)
    assert isinstance(model.unwrap_python_model(), SB3PolicyModel)
