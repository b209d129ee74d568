"""The registry life cycle on each MLflow backend store: SQLite and, when reachable, PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.engine import make_url

from gpt_trader.registry.config import RegistryConfig
from gpt_trader.registry.models import CHAMPION, alias_version, champion_uri, promote, register_challenger, rollback
from gpt_trader.registry.tracking import setup_experiment, tracking_uri
from gpt_trader.settings import load_settings
from tests.integration.conftest import DATABASE_BACKENDS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ROOT / "config" / "production.yaml"


def production_tracking_uri() -> str:
    """`registry.tracking_uri` as config/production.yaml resolves it (params.yaml + overlay, no env override)."""
    settings = load_settings(PRODUCTION, params=ROOT / "params.yaml")
    return tracking_uri(settings.registry, settings.paths.mlflow)


@pytest.fixture(params=DATABASE_BACKENDS)
def registry_config(request, tmp_path, monkeypatch) -> RegistryConfig:
    if request.param == "sqlite":
        return RegistryConfig(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    # Production's own URI (driver, user, host, port), on a throw-away database instead of `mlflow`.
    monkeypatch.delenv("GPT_TRADER_REGISTRY__TRACKING_URI", raising=False)
    db = request.getfixturevalue("postgres_database")
    url = make_url(production_tracking_uri()).set(database=db)
    return RegistryConfig(tracking_uri=url.render_as_string(hide_password=False))


def test_production_config_resolves_mlflow_and_prefect_to_the_local_postgresql(monkeypatch):
    monkeypatch.delenv("GPT_TRADER_REGISTRY__TRACKING_URI", raising=False)
    mlflow_url = make_url(production_tracking_uri())
    assert (mlflow_url.drivername, mlflow_url.host, mlflow_url.port) == ("postgresql+psycopg", "127.0.0.1", 5432)
    assert mlflow_url.database == "mlflow"
    # The Prefect server's database is Prefect's setting; production.yaml documents the value to export.
    (documented,) = re.findall(r"PREFECT_SERVER_DATABASE_CONNECTION_URL=(\S+)", PRODUCTION.read_text())
    prefect_url = make_url(documented)
    assert (prefect_url.drivername, prefect_url.host, prefect_url.port) == ("postgresql+asyncpg", "127.0.0.1", 5432)
    assert prefect_url.database == "prefect"
    # The environment still overrides the endpoint (e.g. a PostgreSQL on another host).
    monkeypatch.setenv("GPT_TRADER_REGISTRY__TRACKING_URI", "postgresql+psycopg://mlflow@db.internal:5432/mlflow")
    assert production_tracking_uri() == "postgresql+psycopg://mlflow@db.internal:5432/mlflow"


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
