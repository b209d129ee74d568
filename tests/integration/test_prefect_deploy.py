"""`prefect deploy --all` of prefect.yaml against a real Prefect server, read back through the client."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy.engine import make_url

from tests.integration.conftest import DATABASE_BACKENDS, free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POOLS = {"gpt-trader-training", "gpt-trader-live"}

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def production_prefect_database(db: str) -> str:
    """The Prefect server database URL that config/production.yaml documents, on database `db` instead."""
    (url,) = re.findall(r"PREFECT_SERVER_DATABASE_CONNECTION_URL=(\S+)", (ROOT / "config/production.yaml").read_text())
    return make_url(url).set(database=db).render_as_string(hide_password=False)


@pytest.fixture(params=DATABASE_BACKENDS)
def prefect_server(request, tmp_path):
    """A Prefect server process on a free port, on SQLite or on a fresh PostgreSQL database."""
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "GPT_TRADER_HOME": str(ROOT),
    }
    if request.param == "postgresql":
        db = request.getfixturevalue("postgres_database")
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = production_prefect_database(db)
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 (closed in teardown)
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            time.sleep(0.5)
        else:
            pytest.fail("Prefect server did not start:\n" + (tmp_path / "server.log").read_text())
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def run(cmd: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_prefect_yaml_deploys_pools_deployments_and_schedules(prefect_server):
    env = prefect_server
    prefect = str(BIN / "prefect")
    for pool in ("gpt-trader-training", "gpt-trader-live"):
        run([prefect, "work-pool", "create", pool, "--type", "process", "--overwrite"], env)
    run([prefect, "--no-prompt", "deploy", "--all"], env)

    async def read_back():
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            pools = {p.name: p.type for p in await client.read_work_pools()}
            deployments = {d.name: d for d in await client.read_deployments()}
            automations = await client.read_automations()
            return pools, deployments, automations

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
        pools, deployments, automations = asyncio.run(read_back())
    assert pools == {"gpt-trader-training": "process", "gpt-trader-live": "process"}
    assert {"capture-daily", "validate", "build-features"} <= set(deployments)
    capture = deployments["capture-daily"]
    assert capture.work_pool_name == "gpt-trader-training"
    assert capture.parameters == {"params": "params.yaml"}
    assert [s.schedule.cron for s in capture.schedules] == ["30 21 * * 1-5"]
    assert capture.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]

    # Training and registry deployments.
    assert {"retrain-daily", "retrain-hourly", "promote", "train-transformer", "train-rl", "evaluate"} <= set(
        deployments
    )
    daily = deployments["retrain-daily"]
    assert daily.entrypoint == "flows/retrain.py:retrain_flow"
    assert daily.work_pool_name == "gpt-trader-training"
    assert daily.parameters == {"params": "params.yaml", "reason": "schedule"}
    assert [(s.schedule.cron, s.active) for s in daily.schedules] == [("0 22 * * 1-5", True)]
    assert daily.global_concurrency_limit is not None
    assert daily.global_concurrency_limit.limit == 1
    hourly = deployments["retrain-hourly"]
    assert [s.active for s in hourly.schedules] == [False]
    assert hourly.parameters["agent"] == "ppo"
    assert deployments["promote"].parameters == {"params": "params.yaml", "kind": "all"}
    # The drift trigger became an automation that runs retrain-daily with the templated parameters.
    (drift,) = [a for a in automations if "gpt_trader.drift.detected" in getattr(a.trigger, "expect", set())]
    (action,) = drift.actions
    assert action.deployment_id == daily.id
    assert action.parameters == {"reason": "drift", "dataset": "{{ event.payload.dataset }}"}

    # Every deployment of prefect.yaml came back as written: flow entrypoint, pool, queue, parameters, schedules.
    declared = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    assert set(deployments) == set(declared)
    for name, spec in declared.items():
        got = deployments[name]
        assert got.entrypoint == spec["entrypoint"], name
        assert got.work_pool_name == spec["work_pool"]["name"], name
        assert got.work_pool_name in POOLS, name
        assert got.work_queue_name == spec["work_pool"].get("work_queue_name", "default"), name
        assert got.parameters == spec["parameters"], name
        schedules = [(s.schedule.cron, s.schedule.timezone, s.active) for s in got.schedules]
        assert schedules == [(s["cron"], s["timezone"], s["active"]) for s in spec.get("schedules", [])], name
    drift_daily = deployments["drift-daily"]
    assert drift_daily.entrypoint == "flows/drift.py:drift_flow"
    assert drift_daily.work_pool_name == "gpt-trader-training"
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in drift_daily.schedules] == [
        ("30 22 * * 1-5", "UTC", True)
    ]
    assert drift_daily.parameters == {"params": "params.yaml", "dataset": "bundled/SPX_1d", "current_bars": 250}
    live = deployments["live"]
    assert live.entrypoint == "flows/live.py:live_flow"
    assert live.work_pool_name == "gpt-trader-live"  # the only deployment on the live pool
    assert [n for n, d in deployments.items() if d.work_pool_name == "gpt-trader-live"] == ["live"]
    assert live.schedules == []  # started by hand (or the autoscaler), never on a timer
    assert live.global_concurrency_limit is not None
    assert live.global_concurrency_limit.limit == 1
    assert live.parameters["strategy"] == "live"
