from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from gpt_trader.core.clock import SimClock
from gpt_trader.registry.config import RegistryConfig
from gpt_trader.registry.models import promote, register_challenger
from gpt_trader.registry.tracking import setup_experiment
from gpt_trader.serving.champion import ChampionSlot

NAME = "serving-test"
X = pd.DataFrame({"x": [0.0]})

pytestmark = pytest.mark.slow


@pytest.fixture
def client(tmp_path):
    import mlflow

    setup_experiment("serving", RegistryConfig(), tmp_path / "mlflow")
    return mlflow.MlflowClient()


def _register(client, value: float, promote_it: bool = True) -> str:
    import mlflow

    class Constant(mlflow.pyfunc.PythonModel):
        def __init__(self, v: float) -> None:
            self.v = v

        def predict(self, context, model_input, params=None):
            if np.isnan(self.v):
                raise RuntimeError("model is broken")
            return pd.DataFrame({"position": np.full(len(model_input), self.v)})

    with mlflow.start_run():
        # No pip-requirements inference (seconds per model): the model loads in this process.
        uri = mlflow.pyfunc.log_model(name="m", python_model=Constant(value), pip_requirements=[]).model_uri
    version = register_challenger(client, NAME, uri, {})
    if promote_it:
        promote(client, NAME, version, reason="test")
    return version


def probe(model) -> None:
    out = model.predict(X)
    assert np.isfinite(out["position"].to_numpy()).all()


def test_champion_slot_hot_swaps_when_alias_moves(client):
    alerts = []
    slot = ChampionSlot(NAME, client, probe=probe, on_alert=lambda s, m: alerts.append((s, m)))
    assert slot.refresh() is False  # nothing registered yet
    assert alerts[0][0] == "WARNING"
    _register(client, 1.0)
    assert slot.refresh() is True
    assert slot.current.model.predict(X)["position"].tolist() == [1.0]
    assert slot.refresh() is False  # unchanged alias: no reload
    _register(client, 2.0)
    assert slot.refresh() is True
    assert slot.current.version == "2"
    assert slot.current.model.predict(X)["position"].tolist() == [2.0]


def test_champion_slot_broken_new_champion_keeps_old_and_alerts(client):
    alerts = []
    slot = ChampionSlot(NAME, client, probe=probe, on_alert=lambda s, m: alerts.append((s, m)))
    _register(client, 1.0)
    slot.refresh()
    _register(client, float("nan"))  # promoted, but fails to predict
    assert slot.refresh() is False
    assert slot.current.version == "1"
    assert alerts[-1][0] == "ERROR"
    assert "v2 failed to load or predict" in alerts[-1][1]
    assert "keeping v1" in alerts[-1][1]
    assert slot.refresh() is False  # refused versions are not retried on every poll
    assert len([a for a in alerts if a[0] == "ERROR"]) == 1


def test_champion_slot_expires_old_model(client):
    clock = SimClock(datetime.now(UTC))
    slot = ChampionSlot(NAME, client, max_age=timedelta(hours=1), clock=clock)
    assert slot.is_expired()  # no model at all
    _register(client, 1.0)
    slot.refresh()
    assert not slot.is_expired()
    clock.advance(timedelta(hours=2))
    assert slot.is_expired()


def test_champion_slot_fall_back_serves_the_replaced_version_and_refuses_the_failed_one(client):
    alerts = []
    slot = ChampionSlot(NAME, client, probe=probe, on_alert=lambda s, m: alerts.append((s, m)))
    _register(client, 1.0)
    slot.refresh()
    assert slot.fall_back("1", "boom") is None  # nothing to fall back to: the caller goes flat
    assert slot.current.version == "1"
    _register(client, 2.0)  # passes its probe
    assert slot.refresh() is True
    assert slot.previous.version == "1"
    back = slot.fall_back("2", "shape mismatch on live rows")
    assert back is slot.current
    assert back.version == "1"
    assert back.model.predict(X)["position"].tolist() == [1.0]
    assert slot.previous is None
    assert alerts[-1][0] == "ERROR"
    assert "v2 failed to predict while serving (shape mismatch on live rows)" in alerts[-1][1]
    assert "fell back to v1" in alerts[-1][1]
    assert slot.refresh() is False  # the alias still names v2: refused, not swapped back in
    assert slot.current.version == "1"
    assert slot.fall_back("2", "late report") is slot.current  # a stale report changes nothing
    assert len([a for a in alerts if a[0] == "ERROR"]) == 1
    _register(client, 3.0)  # a new promotion is served as usual
    assert slot.refresh() is True
    assert slot.current.version == "3"
    assert slot.previous.version == "1"
