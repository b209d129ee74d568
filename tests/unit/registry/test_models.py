from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gpt_trader.registry.config import RegistryConfig
from gpt_trader.registry.models import (
    CHALLENGER,
    CHAMPION,
    RegistryError,
    alias_version,
    champion_uri,
    list_versions,
    promote,
    register_challenger,
    rollback,
)
from gpt_trader.registry.tracking import setup_experiment

NAME = "gpt-trader-test"


@pytest.fixture
def client(tmp_path):
    from mlflow import MlflowClient

    setup_experiment("registry-test", RegistryConfig(), tmp_path / "mlflow")
    return MlflowClient()


def _log_model(value: float) -> str:
    import mlflow

    class Constant(mlflow.pyfunc.PythonModel):
        def __init__(self, v: float) -> None:
            self.v = v

        def predict(self, context, model_input, params=None):
            return pd.DataFrame({"position": np.full(len(model_input), self.v)})

    with mlflow.start_run():
        return mlflow.pyfunc.log_model(name="m", python_model=Constant(value)).model_uri


def test_register_challenger_tags_and_alias(client):
    v1 = register_challenger(client, NAME, _log_model(1.0), {"data_sha256": "abc", "sharpe": 0.5})
    assert alias_version(client, NAME, CHALLENGER) == v1
    assert alias_version(client, NAME, CHAMPION) is None
    assert client.get_model_version(NAME, v1).tags["sharpe"] == "0.5"


def test_promote_moves_champion_records_previous_and_rollback_restores(client):
    import mlflow

    v1 = register_challenger(client, NAME, _log_model(1.0), {})
    promote(client, NAME, v1, reason="first model")
    v2 = register_challenger(client, NAME, _log_model(2.0), {})
    promote(client, NAME, v2, reason="better sharpe")
    assert alias_version(client, NAME, CHAMPION) == v2
    assert alias_version(client, NAME, CHALLENGER) is None
    assert client.get_model_version(NAME, v2).tags["promotion.previous_champion"] == v1
    served = mlflow.pyfunc.load_model(champion_uri(NAME)).predict(pd.DataFrame({"x": [0.0]}))
    assert served["position"].tolist() == [2.0]
    assert rollback(client, NAME) == (v2, v1)
    assert alias_version(client, NAME, CHAMPION) == v1
    served = mlflow.pyfunc.load_model(champion_uri(NAME)).predict(pd.DataFrame({"x": [0.0]}))
    assert served["position"].tolist() == [1.0]


def test_rollback_first_champion_refused(client):
    v1 = register_challenger(client, NAME, _log_model(1.0), {})
    promote(client, NAME, v1, reason="first")
    with pytest.raises(RegistryError, match="nothing to roll back"):
        rollback(client, NAME)


def test_promote_any_registered_version_without_retraining(client):
    v1 = register_challenger(client, NAME, _log_model(1.0), {})
    register_challenger(client, NAME, _log_model(2.0), {})
    promote(client, NAME, v1, reason="backtest winner")
    assert alias_version(client, NAME, CHAMPION) == v1


def test_promote_unknown_version_and_list_unknown_model_errors(client):
    register_challenger(client, NAME, _log_model(1.0), {})
    with pytest.raises(RegistryError, match="no version '9'"):
        promote(client, NAME, "9", reason="x")
    with pytest.raises(RegistryError, match="no registered model"):
        list_versions(client, "nope")


def test_list_versions_shows_aliases_newest_first(client):
    v1 = register_challenger(client, NAME, _log_model(1.0), {})
    promote(client, NAME, v1, reason="first")
    v2 = register_challenger(client, NAME, _log_model(2.0), {})
    versions = list_versions(client, NAME)
    assert [v.version for v in versions] == [v2, v1]
    assert versions[0].aliases == (CHALLENGER,)
    assert versions[1].aliases == (CHAMPION,)
