"""Real services for integration tests: PostgreSQL (a throw-away database per test) and free loopback ports."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

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
