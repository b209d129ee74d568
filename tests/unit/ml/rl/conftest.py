"""Synthetic market arrays for the RL environment tests (no feature pipeline needed) and MLflow stores."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from gpt_trader.ml.rl.market import MarketArrays


def synthetic_market(
    n: int = 64, n_assets: int = 1, n_features: int = 3, seed: int = 0, drift: float = 0.0
) -> MarketArrays:
    """Random-walk closes, random features, positive volume and sigma; daily timestamps."""
    rng = np.random.default_rng(seed)
    rets = drift + 0.01 * rng.standard_normal((n, n_assets))
    close = 100.0 * np.exp(np.cumsum(rets, axis=0))
    ts = np.datetime64("2020-01-01") + np.arange(n).astype("timedelta64[D]")
    return MarketArrays(
        ts=ts.astype("datetime64[us]"),
        symbols=tuple(f"S{i}" for i in range(n_assets)),
        feature_names=tuple(f"f{i}" for i in range(n_features)),
        features=rng.standard_normal((n, n_assets, n_features)).astype(np.float32),
        close=close,
        volume=rng.uniform(1e4, 1e5, (n, n_assets)),
        sigma=rng.uniform(0.005, 0.02, (n, n_assets)),
    )


@pytest.fixture
def market() -> MarketArrays:
    """A 64-bar single-asset market."""
    return synthetic_market()


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, created once per session: a fresh store runs seconds of schema migrations."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def mlflow_dir(tmp_path: Path, migrated_mlflow_db: Path) -> Path:
    """This test's own MLflow directory (`paths.mlflow`), holding a copy of the migrated empty store."""
    root = tmp_path / "mlflow"
    root.mkdir()
    shutil.copyfile(migrated_mlflow_db, root / "mlflow.db")
    return root
