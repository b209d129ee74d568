"""The registry life cycle on each MLflow backend store: SQLite and, when reachable, PostgreSQL."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gpt_trader.registry.config import RegistryConfig
from gpt_trader.registry.models import CHAMPION, alias_version, champion_uri, promote, register_challenger, rollback
from gpt_trader.registry.tracking import setup_experiment
from tests.integration.conftest import DATABASE_BACKENDS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(params=DATABASE_BACKENDS)
def registry_config(request, tmp_path) -> RegistryConfig:
    if request.param == "sqlite":
        return RegistryConfig(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    db = request.getfixturevalue("postgres_database")
    return RegistryConfig(tracking_uri=f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}")


def test_registry_life_cycle_on_backend_store(registry_config, tmp_path):
    import mlflow

    setup_experiment("backend-test", registry_config, tmp_path / "mlflow")

    class Constant(mlflow.pyfunc.PythonModel):
        def __init__(self, v: float) -> None:
            self.v = v

        def predict(self, context, model_input, params=None):
            return pd.DataFrame({"position": np.full(len(model_input), self.v)})

    client = mlflow.MlflowClient()
    versions = []
    for value in (1.0, 2.0):
        with mlflow.start_run() as run:
            mlflow.log_metric("sharpe", value)
            uri = mlflow.pyfunc.log_model(name="m", python_model=Constant(value)).model_uri
        versions.append(register_challenger(client, "backend-model", uri, {"run": run.info.run_id}))
        promote(client, "backend-model", versions[-1], reason=f"v{value}")
    assert alias_version(client, "backend-model", CHAMPION) == versions[1]
    served = mlflow.pyfunc.load_model(champion_uri("backend-model")).predict(pd.DataFrame({"x": [0.0]}))
    assert served["position"].tolist() == [2.0]
    assert rollback(client, "backend-model") == (versions[1], versions[0])
    assert (tmp_path / "mlflow" / "artifacts").exists()
