from __future__ import annotations

import asyncio
from pathlib import Path

import polars as pl
import pytest

from flows.build_features import build_features_flow
from flows.capture import capture_flow
from flows.validate import validate_flow

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _artifact(key: str, state) -> str:
    """The data of the artifact `key` created by the flow run behind `state`."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    run_id = state.state_details.flow_run_id

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])
                )
            )

    (artifact,) = asyncio.run(read())
    return str(artifact.data)


def _task_states(flow_state) -> list[str]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_state.state_details.flow_run_id]))
            )
            return [r.state.name for r in runs]

    return asyncio.run(read())


def test_data_flows_capture_validate_features_with_artifacts_and_cache(prefect_api, overlay, tmp_path):
    config = overlay()
    captured = capture_flow(config=config, return_state=True)
    rows = captured.result()
    assert rows[0]["key"] == "bundled/GOOGL_1d"
    assert rows[0]["added"] == 2335
    assert "| bundled/GOOGL_1d | 2335 |" in _artifact("capture-summary", captured)
    assert capture_flow(config=config)[0]["added"] == 0
    validated = validate_flow(config=config, return_state=True)
    assert validated.result()[0]["success"] is True
    assert "| bundled/GOOGL_1d | True |" in _artifact("validation-summary", validated)
    assert "data_docs/index.html" in _artifact("data-docs", validated)
    paths = build_features_flow(config=config)
    assert pl.read_parquet(paths[0]).height == 2275
    # Same validated data and params: the features task is served from the cache.
    state = build_features_flow(config=config, return_state=True)
    assert "Cached" in _task_states(state)
    # A deleted output is rebuilt even though inputs and params are unchanged.
    Path(paths[0]).unlink()
    state = build_features_flow(config=config, return_state=True)
    assert "Cached" not in _task_states(state)
    assert Path(paths[0]).exists()
    # Params change: the cache key changes and the task runs again.
    state = build_features_flow(config=overlay("features: {rsi_window: 10}\n"), return_state=True)
    assert "Cached" not in _task_states(state)


def test_validate_flow_failure_quarantines_and_features_refuse(prefect_api, overlay, tmp_path):
    config = overlay("validation: {max_price: 100.0}\n")
    capture_flow(config=config)
    state = validate_flow(config=config, return_state=True)
    assert state.is_failed()
    assert (tmp_path / "data" / "quarantine" / "bundled" / "GOOGL_1d.failures.json").exists()
    assert "| bundled/GOOGL_1d | False |" in _artifact("validation-summary", state)
    features = build_features_flow(config=config, return_state=True)
    assert features.is_failed()
    assert not Path(tmp_path / "data" / "features").exists()


def _task_runs(flow_state) -> list:
    """The task runs of the flow run behind `flow_state`, with their state histories, read from the server."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_state.state_details.flow_run_id]))
            )
            return [(run, [s.name for s in await client.read_task_run_states(run.id)]) for run in runs]

    return asyncio.run(read())


def _binance_overlay(tmp_path, url: str, symbol: str = "BTCUSDT") -> str:
    """Capture 2024-01-01 hourly klines from the loopback Binance; the HTTP client itself does not retry."""
    path = tmp_path / "binance.yaml"
    path.write_text(
        f"paths: {{data: {tmp_path / 'data'}, metrics: {tmp_path / 'metrics'}, reports: {tmp_path / 'reports'}}}\n"
        "data:\n"
        "  providers: {binance_url: '" + url + "', max_retries: 0, timeout_secs: 5}\n"
        "  datasets:\n"
        f"    - {{source: binance, symbol: {symbol}, timeframe: 1h, start: 2024-01-01, end: 2024-01-02, "
        "calendar: continuous}\n"
    )
    return str(path)


@pytest.fixture
def binance(monkeypatch):
    """The loopback provider server, and capture's real backoff (5, 10, 20 s) shrunk to keep the test fast."""
    from flows.capture import capture_task
    from tests.support.provider_server import ProviderServer

    monkeypatch.delenv("BINANCE_API_KEY", raising=False)
    monkeypatch.setattr(capture_task, "retry_delay_seconds", [0.2, 0.4, 0.8])
    with ProviderServer() as server:
        yield server


def test_capture_flow_transient_provider_failure_is_retried_and_the_flow_succeeds(prefect_api, binance, tmp_path):
    # The provider answers its first request with a 503 (Binance's own error JSON): the capture task fails, and
    # Prefect retries it after the backoff; the second attempt gets the klines.
    binance.fail(1, 503, provider="binance")
    state = capture_flow(config=_binance_overlay(tmp_path, binance.url), return_state=True)
    assert state.is_completed(), state
    (row,) = state.result()
    assert row["key"] == "binance/BTCUSDT_1h"
    assert row["added"] == 24
    assert [r.param("startTime") for r in binance.requests_for("binance")] == ["1704067200000"] * 2
    ((run, history),) = _task_runs(state)
    assert run.run_count == 2
    assert history[:2] == ["Pending", "Running"]
    assert history[-3:] == ["AwaitingRetry", "Retrying", "Completed"]
    assert "| binance/BTCUSDT_1h | 24 |" in _artifact("capture-summary", state)


def test_capture_flow_deterministic_provider_failure_is_not_retried(prefect_api, binance, tmp_path):
    # An unknown symbol is a 400 (Binance -1121): waiting cannot fix it, so the task fails on its first attempt.
    state = capture_flow(config=_binance_overlay(tmp_path, binance.url, symbol="NOPEUSDT"), return_state=True)
    assert state.is_failed()
    assert len(binance.requests_for("binance")) == 1
    ((run, history),) = _task_runs(state)
    assert run.run_count == 1
    assert "AwaitingRetry" not in history
    assert history[-1] == "Failed"
