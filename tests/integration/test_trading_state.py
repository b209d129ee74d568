"""Trading state on every database backend (SQLite always, PostgreSQL when reachable)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import DATABASE_BACKENDS
from tests.unit.trading.test_state import kill_and_resume, roundtrip, run_script, snapshot, state_dir

__all__ = ["state_dir"]  # the tmpfs fixture, re-used

pytestmark = pytest.mark.integration


def backend_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    name = request.getfixturevalue("postgres_database")
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


@pytest.mark.parametrize("backend", DATABASE_BACKENDS)
def test_state_store_roundtrip_on_backend(backend: str, request: pytest.FixtureRequest, tmp_path: Path):
    roundtrip(backend_url(backend, request, tmp_path))


@pytest.mark.slow
@pytest.mark.skipif("postgresql" not in DATABASE_BACKENDS, reason="PostgreSQL not reachable")
def test_state_kill9_restart_on_postgresql_equals_uninterrupted_run(request: pytest.FixtureRequest, state_dir: Path):
    bars = 60
    crashed = backend_url("postgresql", request, state_dir)
    kill_and_resume(crashed, bars, kills=1, seed=7)
    clean = f"sqlite:///{state_dir / 'clean.db'}"
    proc = run_script(clean, bars)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert snapshot(crashed) == snapshot(clean)  # the same run, whichever backend kept the state


@pytest.mark.skipif("postgresql" not in DATABASE_BACKENDS, reason="PostgreSQL not reachable")
def test_production_config_keeps_trading_state_in_postgresql(request: pytest.FixtureRequest):
    """config/production.yaml puts the state on PostgreSQL; the store builds its schema there and round-trips
    (on a throw-away database of the same server instead of the configured one)."""
    from sqlalchemy.engine import make_url

    from gpt_trader.settings import load_settings

    root = Path(__file__).resolve().parents[2]
    url = make_url(load_settings(root / "config" / "production.yaml").trading.state.url)
    assert url.get_backend_name() == "postgresql"
    assert (url.host, url.port) == ("127.0.0.1", 5432)
    roundtrip(url.set(database=request.getfixturevalue("postgres_database")).render_as_string(hide_password=False))
