"""A full live session end to end: local exchange -> websocket -> pipeline -> registry champions -> risk ->
paper broker -> state store; and a real `kill -9` of `gpt-trader live` resuming without double fills."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import date
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpt_trader.trading.runner import LiveOptions, run_live
from gpt_trader.trading.state import StateStore

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def overlay(live_overlay):
    """Settings pointing every store at tmp_path, with Buy-everything champions registered."""
    return live_overlay()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_live_session_replay_end_to_end_trades_and_persists(live_overlay):
    port = _free_port()
    _, settings = live_overlay(f"monitoring: {{exporter: {{enabled: true, port: {port}}}}}\n")
    options = LiveOptions(symbols=("SPX",), start=date(2018, 6, 1), end=date(2018, 9, 1), rate=0, duration_secs=60)
    scraped: list[str] = []

    def scrape(_: dict) -> None:  # mid-session, from the monitor's Prometheus endpoint; the last bar's scrape counts
        # (counters reach Prometheus on the pipeline's ticker, every 20 ms: the first bar may come before it runs)
        scraped[:] = [urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()]

    report = asyncio.run(run_live(settings, options, on_bar=scrape))
    # The pipeline's own metrics share the monitor's endpoint: its ticks, source health and bus state.
    samples = {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for family in text_string_to_metric_families(scraped[0])
        for s in family.samples
    }
    assert samples["gpt_trader_realtime_ticks_total[('source', 'alpaca'), ('symbol', 'SPX')]"] > 0
    assert samples["gpt_trader_realtime_bus_up[]"] == 1.0
    assert "gpt_trader_realtime_source_health[('source', 'alpaca')]" in samples
    summary = report.summary
    assert report.bars_streamed == summary["bars"] > 55  # every replayed trading day reached the session
    assert summary["trades"] >= 1
    assert summary["positions"]["SPX"] > 0  # both champions say Buy: long, within the position cap
    assert summary["risk_state"] == "ACTIVE"
    store = StateStore(f"sqlite:///{settings.paths.data}/trading/live.db", strategy="live")
    saved = store.load(__import__("decimal").Decimal(100_000))
    assert float(saved.portfolio.equity()) == pytest.approx(summary["equity"], abs=0.01)
    assert len(store.fills()) == summary["trades"]
    store.close()


def test_live_cli_kill_9_and_restart_resume_without_double_fills(overlay, tmp_path):
    path, settings = overlay
    cmd = [
        str(Path(sys.executable).parent / "gpt-trader"),
        "-c",
        str(path),
        "live",
        "--start",
        "2018-03-01",
        "--end",
        "2018-12-01",
        "--rate",
        "300",
        "--duration",
        "120",
        "--strategy",
        "crashy",
    ]
    # The fixture's champions are classes in tests/support: the CLI process must be able to import them.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    # Start like a user's shell: no MLflow URIs inherited from this process (set_tracking_uri exports them).
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(name, None)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    db = tmp_path / "data" / "trading" / "crashy.db"
    deadline = time.monotonic() + 90
    committed = 0
    while time.monotonic() < deadline:  # wait until a good part of the tape is committed, then kill -9
        if db.exists():
            store = StateStore(f"sqlite:///{db}", strategy="crashy")
            committed = len(store.load(__import__("decimal").Decimal(100_000)).portfolio.equity_curve)
            store.close()
            if committed >= 40:
                break
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert committed >= 40, "the session did not commit bars before the kill"
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    store = StateStore(f"sqlite:///{db}", strategy="crashy")
    fills = store.fills()
    curve = store.load(__import__("decimal").Decimal(100_000)).portfolio.equity_curve
    store.close()
    assert len({f.fill_id for f in fills}) == len(fills)  # no fill booked twice
    days = [p.ts for p in curve]
    assert days == sorted(set(days))  # every bar committed exactly once across the two processes
    assert len(days) > committed
    assert fills, "the champions never traded: the CLI process could not load them from the configured store"

    # The same tape straight through gives the same book: the kill lost nothing and doubled nothing.
    straight = asyncio.run(
        run_live(
            settings,
            LiveOptions(
                symbols=("SPX",),
                start=date(2018, 3, 1),
                end=date(2018, 12, 1),
                rate=0,
                duration_secs=120,
                strategy="straight",
            ),
        )
    )
    assert curve[-1].equity == pytest.approx(__import__("decimal").Decimal(str(straight.summary["equity"])), abs=0.01)
