"""The `live` flow under a real Prefect API: a short paper session on replayed real bars with the registered
champions, its P&L artifact readable from the server, and the session's book committed to the state store."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from gpt_trader.trading.state import StateStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_live_flow_runs_a_paper_session_and_publishes_its_pnl_artifact(prefect_api, live_overlay):
    from prefect.client.orchestration import get_client

    from flows.live import live_flow

    path, settings = live_overlay()
    summary = live_flow(
        config=str(path), symbols="SPX", start="2018-06-01", end="2018-07-01", duration_secs=60, rate=0.0,
        strategy="flowtest",
    )  # fmt: skip
    assert summary["bars"] >= 20  # every trading day of June 2018
    assert summary["positions"]["SPX"] > 0  # both champions say Buy

    async def artifact() -> str:
        async with get_client() as client:
            found = await client.read_latest_artifacts()
            return next(a.data for a in found if a.key == "live-session")

    table = asyncio.run(artifact())
    rows = {
        cells[0]: cells[1]
        for line in table.splitlines()
        if len(cells := [c.strip() for c in line.strip().strip("|").split("|")]) == 2
    }
    assert float(rows["equity"].replace(",", "")) == pytest.approx(summary["equity"], abs=0.01)
    assert float(rows["total_pnl"].replace(",", "")) == pytest.approx(summary["total_pnl"], abs=0.01)
    store = StateStore(f"sqlite:///{settings.paths.data}/trading/flowtest.db", strategy="flowtest")
    try:
        saved = store.load(Decimal(100_000))
        assert float(saved.portfolio.equity()) == pytest.approx(summary["equity"], abs=0.01)
    finally:
        store.close()
