"""Shared fixtures: small real-data slices and bar-frame builders."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def make_bars(
    n: int,
    *,
    start: datetime | None = None,
    step: timedelta = timedelta(days=1),
    symbol: str = "TEST",
    source: str = "test",
    price: float = 100.0,
) -> pl.DataFrame:
    """A tidy, valid bar frame: consistent OHLC, positive prices, strictly increasing timestamps."""
    start = start or datetime(2024, 1, 1, tzinfo=UTC)
    closes = [price * (1 + 0.001 * ((i * 7919) % 13 - 6)) for i in range(n)]
    opens = [price, *closes[:-1]]
    return pl.DataFrame(
        {
            "ts": [start + i * step for i in range(n)],
            "symbol": [symbol] * n,
            "source": [source] * n,
            "open": opens,
            "high": [max(o, c) * 1.002 for o, c in zip(opens, closes, strict=True)],
            "low": [min(o, c) * 0.998 for o, c in zip(opens, closes, strict=True)],
            "close": closes,
            "volume": [1000.0 + i for i in range(n)],
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


@pytest.fixture
def bars_factory():
    """The `make_bars` builder as a fixture."""
    return make_bars


_REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
_LEAKS = ("mlruns", "lightning_logs")
_PREEXISTING = {name for name in _LEAKS if (_REPO / name).exists()}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a test wrote MLflow/Lightning output into the repository instead of a tmp dir."""
    leaked = [name for name in _LEAKS if name not in _PREEXISTING and (_REPO / name).exists()]
    if leaked:
        print(f"\nERROR: tests leaked {leaked} into {_REPO}; point stores at tmp_path")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
