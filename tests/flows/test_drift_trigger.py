"""A drift event starts a retrain: real Prefect server, a served deployment with prefect.yaml's trigger, a real event.

The served deployment is `retrain_flow` with `dry_run=True` (it only records its plan), so the test stays fast,
but the path is the production one: the trigger block is read from prefect.yaml's `retrain-daily` deployment,
the server's triggers service matches the event and creates a flow run with the templated parameters, and the
`serve` process picks it up and runs it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEPLOYMENT = "retrain-on-drift-test"

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVE = f"""
import yaml
from prefect.events import DeploymentEventTrigger
from flows.retrain import retrain_flow

spec = next(d for d in yaml.safe_load(open("prefect.yaml"))["deployments"] if d["name"] == "retrain-daily")
retrain_flow.serve(
    name="{DEPLOYMENT}",
    triggers=[DeploymentEventTrigger(**t) for t in spec["triggers"]],
    parameters={{"params": "params.yaml", "dry_run": True}},
)
"""

EMIT = """
from prefect.events import emit_event
from prefect.events.worker import EventsWorker

emit_event(
    event="gpt_trader.drift.detected",
    resource={"prefect.resource.id": "gpt_trader.dataset.bundled.SPX_1d", "prefect.resource.name": "bundled/SPX_1d"},
    payload={"dataset": "bundled/SPX_1d", "share_drifted": 0.6},
)
EventsWorker.drain_all()
"""


def _wait_healthy(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, log.read_text()
        time.sleep(0.5)
    pytest.fail("Prefect server did not start:\n" + log.read_text())


async def _runs(deployment_name: str) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    async with get_client() as client:
        return await client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name]))
        )


async def _deployment_ready() -> bool:
    from prefect import get_client

    async with get_client() as client:
        try:
            await client.read_deployment_by_name(f"retrain/{DEPLOYMENT}")
        except Exception:
            return False
        return bool(await client.read_automations_by_name(f"{DEPLOYMENT}__automation_1"))


def test_drift_event_starts_a_retrain_run_with_reason_drift(tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
    }
    procs: list[subprocess.Popen] = []
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("server", "serve")}  # noqa: SIM115
    try:
        server = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
            env=env,
            stdout=logs["server"],
            stderr=subprocess.STDOUT,
        )
        procs.append(server)
        _wait_healthy(port, server, tmp_path / "server.log")
        serve = subprocess.Popen(
            [sys.executable, "-c", SERVE], cwd=ROOT, env=env, stdout=logs["serve"], stderr=subprocess.STDOUT
        )
        procs.append(serve)
        with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
            deadline = time.monotonic() + 90
            while not asyncio.run(_deployment_ready()):
                assert serve.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline, "served deployment or its automation never appeared"
                time.sleep(1)
            # The triggers service loads new automations on its own schedule: re-emit until a run appears.
            deadline = time.monotonic() + 90
            done = None
            next_emit = 0.0
            while done is None and time.monotonic() < deadline:
                if time.monotonic() >= next_emit:
                    subprocess.run([sys.executable, "-c", EMIT], cwd=ROOT, env=env, check=True, timeout=60)
                    next_emit = time.monotonic() + 15
                time.sleep(1)
                runs = asyncio.run(_runs(DEPLOYMENT))
                done = next((r for r in runs if r.state and r.state.is_completed()), None)
            assert done is not None, "no completed retrain run within 90 s:\n" + (tmp_path / "serve.log").read_text()
        assert done.parameters["reason"] == "drift"
        assert done.parameters["dataset"] == "bundled/SPX_1d"
        assert done.parameters["dry_run"] is True
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs.values():
            log.close()
