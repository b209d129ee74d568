from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from gpt_trader.cli import app

ROOT = Path(__file__).resolve().parents[3]
NAME = "gpt-trader-transformer"
runner = CliRunner()

pytestmark = pytest.mark.slow


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A real MLflow store with three registered versions (one broken, one with another input signature), and an
    overlay pointing the CLI at it."""
    import mlflow
    from mlflow.models import infer_signature

    from gpt_trader.registry.config import RegistryConfig
    from gpt_trader.registry.models import register_challenger
    from gpt_trader.registry.tracking import setup_experiment

    monkeypatch.chdir(ROOT)
    setup_experiment("cli-test", RegistryConfig(), tmp_path / "mlflow")
    client = mlflow.MlflowClient()

    class Constant(mlflow.pyfunc.PythonModel):
        def __init__(self, v: float) -> None:
            self.v = v

        def predict(self, context, model_input, params=None):
            return pd.DataFrame({"position": np.full(len(model_input), self.v)})

    x = pd.DataFrame({"ret_1": [0.01, -0.02]})
    sig = infer_signature(x, pd.DataFrame({"position": [0.0, 0.0]}))
    for value in (1.0, float("nan")):
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="m", python_model=Constant(value), signature=sig, input_example=x)
        register_challenger(client, NAME, info.model_uri, {})
    # v3 predicts fine but wants a column the serving input (v1's signature) does not carry.
    other = pd.DataFrame({"rsi_14": [50.0, 40.0]})
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="m", python_model=Constant(0.5), signature=infer_signature(other, pd.DataFrame({"position": [0.0]})),
            input_example=other,
        )  # fmt: skip
    register_challenger(client, NAME, info.model_uri, {})
    overlay = tmp_path / "o.yaml"
    overlay.write_text(f"paths: {{mlflow: {tmp_path / 'mlflow'}}}\n")
    return overlay


def test_models_cli_promote_list_rollback_round_trip(registry):
    assert runner.invoke(app, ["-c", str(registry), "models", "promote", NAME, "1"]).exit_code == 0
    broken = runner.invoke(app, ["-c", str(registry), "models", "promote", NAME, "2"])
    assert broken.exit_code == 1
    assert "unfit to serve: predictions contain NaN" in broken.output
    other = runner.invoke(app, ["-c", str(registry), "models", "promote", NAME, "3"])
    assert other.exit_code == 1
    assert "input signature does not match champion v1's input signature" in other.output
    forced = runner.invoke(app, ["-c", str(registry), "models", "promote", NAME, "2", "--force", "--reason", "test"])
    assert forced.exit_code == 0, forced.output
    listing = runner.invoke(app, ["-c", str(registry), "models", "list"])
    assert listing.exit_code == 0
    assert "champion" in listing.output
    back = runner.invoke(app, ["-c", str(registry), "models", "rollback", NAME])
    assert back.exit_code == 0, back.output
    assert "from v2 to v1" in back.output
    again = runner.invoke(app, ["-c", str(registry), "models", "rollback", NAME])
    assert again.exit_code == 1
    assert "nothing to roll back" in again.output
