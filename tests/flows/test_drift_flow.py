"""`drift_flow` against a real Prefect server: report files, artifacts, and the event read back from the server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from flows.drift import drift_flow
from gpt_trader.data.stages import capture_stage, features_stage, validate_stage
from gpt_trader.monitoring.events import DRIFT_DETECTED
from gpt_trader.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _artifacts(state) -> dict[str, Any]:
    """Artifacts of the flow run behind `state`, by key."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
                )
            )

    return {a.key: a for a in asyncio.run(read())}


def _drift_events(resource_id: str, timeout_secs: float = 30.0) -> list[Any]:
    """`gpt_trader.drift.detected` events for `resource_id` stored by the server, polled until one arrives.

    Events travel client -> websocket -> server, which persists them in batches, so they appear after a delay.
    """
    from prefect import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    event_filter = EventFilter(
        event=EventNameFilter(name=[DRIFT_DETECTED]), resource=EventResourceFilter(id=[resource_id])
    )

    async def read():
        async with get_client() as client:
            # The client defaults to limit=100, which the 3.9 server rejects (maximum 50).
            return (await client.read_events(filter=event_filter, limit=50)).events

    deadline = time.monotonic() + timeout_secs
    while True:
        events = asyncio.run(read())
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def test_drift_flow_writes_report_publishes_artifacts_and_emits_event(prefect_api, overlay, tmp_path) -> None:
    from prefect.events.worker import EventsWorker

    config = overlay()
    settings = load_settings(config, params="params.yaml")
    capture_stage(settings)
    validate_stage(settings)
    features_stage(settings)

    state = drift_flow(config=config, dataset="bundled/GOOGL_1d", current_bars=250, return_state=True)
    out = state.result()
    # GOOGL 2009-2015 (the first 70%: the training window) vs Sep 2017 - Aug 2018: measured 11 of 12 columns drift
    # (normed Wasserstein >= 0.1 on 1,592 reference rows); only volume_z, self-normalising by construction, holds.
    assert out["drift_detected"] is True
    assert out["share_drifted"] >= 0.5
    assert out["current"]["rows"] == 250
    report = Path(out["report"])
    assert report.parent == tmp_path / "reports" / "drift" / "bundled" / "GOOGL_1d"
    assert report.exists()
    assert (report.parent / "latest.html").exists()

    artifacts = _artifacts(state)
    assert "| column | drifted | score | method | threshold |" in str(artifacts["drift-summary"].data)
    assert "bundled/GOOGL_1d" in str(artifacts["drift-summary"].data)
    assert report.as_uri() in str(artifacts["drift-report"].data)

    # Hand buffered events to the server now rather than waiting for the worker's own schedule.
    EventsWorker.drain_all(timeout=10)
    events = _drift_events("gpt_trader.dataset.bundled.GOOGL_1d")
    assert [str(e.id) for e in events] == [out["event_id"]]
    (event,) = events
    assert event.event == "gpt_trader.drift.detected"
    assert event.payload["dataset"] == "bundled/GOOGL_1d"
    assert event.payload["share_drifted"] == pytest.approx(out["share_drifted"])
    assert event.payload["drifted_columns"] == out["drifted_columns"]
    assert event.payload["report_path"] == str(report)
    assert event.payload["reference"]["rows"] == out["reference"]["rows"]
