"""Real services for integration tests: PostgreSQL (a throw-away database per test) and free loopback ports."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres_reachable() -> bool:
    """Whether the local PostgreSQL accepts connections (`make test` starts it when installed)."""
    try:
        import psycopg

        with psycopg.connect(PG_DSN, connect_timeout=3):
            return True
    except Exception:
        return False


# The backends the database-backed tests run on: SQLite always, PostgreSQL whenever it is reachable.
DATABASE_BACKENDS = ["sqlite", "postgresql"] if postgres_reachable() else ["sqlite"]


def pytest_report_header(config: pytest.Config) -> str:
    return f"database backends for integration tests: {', '.join(DATABASE_BACKENDS)}"


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """Create an empty database, yield its name, drop it afterwards."""
    import psycopg

    name = f"gpt_trader_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    """An unused loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live_overlay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[Path, Any]]:
    """`make(extra_yaml="")`: settings pointing every store at tmp_path (plus `extra_yaml`, top-level keys other
    than `paths` and `trading`) with Buy-everything champions registered; returns (overlay path, settings)."""
    import mlflow

    from gpt_trader.registry.tracking import setup_experiment
    from gpt_trader.settings import load_settings
    from tests.support.pyfunc_models import FixedPolicy, FixedTransformer, log_and_register

    monkeypatch.chdir(Path(__file__).resolve().parents[2])

    def make(extra_yaml: str = "", trading: str = "") -> tuple[Path, Any]:
        path = tmp_path / "overlay.yaml"
        path.write_text(
            "paths:\n"
            + "".join(f"  {k}: {tmp_path / k}\n" for k in ("data", "models", "reports", "mlflow", "metrics"))
            + f"trading: {{signals: {{policy: agreement}}, live: {{registry_poll_secs: 1.0}}{trading}}}\n"
            + extra_yaml
        )
        settings = load_settings(path)
        setup_experiment("live-test", settings.registry, settings.paths.mlflow)
        client = mlflow.MlflowClient()
        log_and_register(client, settings.registry.transformer_model, FixedTransformer(p_buy=0.8), champion=True)
        log_and_register(client, settings.registry.rl_ppo_model, FixedPolicy(1.0), champion=True)
        return path, settings

    return make
