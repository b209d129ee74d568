"""A real temporary Prefect server (API + SQLite database) for the flow tests."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A temporary Prefect API, with task results (the cache) kept out of the user's ~/.prefect."""
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    with (
        temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: storage}),
        prefect_test_harness(server_startup_timeout=120),
    ):
        yield


@pytest.fixture
def overlay(tmp_path, monkeypatch):
    """Write an overlay that sends every output to tmp_path and captures one small real dataset."""
    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)

    def make(extra: str = "") -> str:
        path = tmp_path / "overlay.yaml"
        path.write_text(
            "paths:\n"
            f"  data: {tmp_path / 'data'}\n  reports: {tmp_path / 'reports'}\n  metrics: {tmp_path / 'metrics'}\n"
            f"  mlflow: {tmp_path / 'mlflow'}\n  models: {tmp_path / 'models'}\n"
            "data:\n  datasets:\n    - {source: bundled, symbol: GOOGL, timeframe: 1d}\n" + extra
        )
        return str(path)

    return make
