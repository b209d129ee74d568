"""Shared fixtures: small real-data slices and bar-frame builders."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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


@pytest.fixture
def live_overlay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[Path, Any]]:
    """`make(extra_yaml="")`: settings pointing every store at tmp_path (plus `extra_yaml`, top-level keys other
    than `paths` and `trading`) with Buy-everything champions registered; returns (overlay path, settings)."""
    import mlflow

    from gpt_trader.registry.tracking import setup_experiment
    from gpt_trader.settings import load_settings
    from tests.support.pyfunc_models import FixedPolicy, FixedTransformer, log_and_register

    monkeypatch.chdir(Path(__file__).resolve().parents[1])

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
