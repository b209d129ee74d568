"""`gpt-trader stream` and `gpt-trader exchange serve` run as a user runs them: subprocesses on loopback."""

from __future__ import annotations

import asyncio
import os
import re
import select
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from gpt_trader.cli import app
from gpt_trader.realtime.exchange import ExchangeConfig, ExchangeThread
from gpt_trader.realtime.replay import load_series

ROOT = Path(__file__).resolve().parents[2]
GPT_TRADER = str(Path(sys.executable).with_name("gpt-trader"))
KEYS = {"APCA_API_KEY_ID": "key", "APCA_API_SECRET_KEY": "secret"}


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPT_TRADER_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def table_rows(stdout: str) -> list[list[str]]:
    """The body rows of the bars table rich prints (cells of lines between │ borders)."""
    rows = [[c.strip() for c in line.strip().strip("│").split("│")] for line in stdout.splitlines()]
    return [r for r in rows if len(r) == 10 and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", r[0])]


@pytest.mark.slow
def test_stream_replay_spy_prints_live_spx_bars() -> None:
    out = subprocess.run(
        [GPT_TRADER, "stream", "--source", "replay", "--symbols", "SPY", "--max-bars", "5", "--duration", "90"],
        cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "replay SPX 1d bars" in out.stdout  # SPY is served from the bundled S&P 500 bars
    rows = table_rows(out.stdout)
    assert len(rows) >= 5
    assert {r[1] for r in rows} == {"SPX"}
    final = int(re.search(r"(\d+) final bars", out.stderr).group(1))  # type: ignore[union-attr]
    assert final >= 5
    # Every bar whose 20 ticks were all streamed (the first may have started mid-bar) is the real day's bar.
    s = load_series("SPX")
    complete = [r for r in rows if r[8] == "20"]
    assert len(complete) >= 4
    for r in complete:
        ts = int(datetime.strptime(r[0], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()) * 1_000_000_000
        i = int(np.searchsorted(s.ts, ts))
        assert s.ts[i] == ts
        assert r[2:7] == [
            f"{s.open[i]:.4f}",
            f"{s.high[i]:.4f}",
            f"{s.low[i]:.4f}",
            f"{s.close[i]:.4f}",
            f"{s.volume[i]:,.0f}",
        ]
    stamps = [r[0] for r in rows]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)


async def _alpaca_client(url: str, symbol: str, n: int) -> list[dict]:
    """Alpaca market data v2 as a client speaks it: connected -> auth -> subscribe -> trade messages."""
    from websockets.asyncio.client import connect

    trades: list[dict] = []
    async with connect(url, open_timeout=10) as ws:
        assert orjson.loads(await ws.recv())[0]["msg"] == "connected"
        await ws.send(orjson.dumps({"action": "auth", "key": "key", "secret": "secret"}).decode())
        assert orjson.loads(await ws.recv())[0]["msg"] == "authenticated"
        await ws.send(orjson.dumps({"action": "subscribe", "trades": [symbol]}).decode())
        assert orjson.loads(await ws.recv())[0]["T"] == "subscription"
        while len(trades) < n:
            trades += [m for m in orjson.loads(await asyncio.wait_for(ws.recv(), 10)) if m.get("T") == "t"]
    return trades


def test_exchange_serve_streams_real_trades_to_a_websocket_client() -> None:
    proc = subprocess.Popen(
        [GPT_TRADER, "exchange", "serve", "--port", "0", "--rate", "2000", "--duration", "60"],
        cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "exchange serve printed nothing"
        line = proc.stdout.readline()  # type: ignore[union-attr]
        match = re.search(r"alpaca (ws://127\.0\.0\.1:\d+/v2/iex)", line)
        assert match, line
        trades = asyncio.run(_alpaca_client(match.group(1), "SPX", 200))
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert {t["S"] for t in trades} == {"SPX"}
    ids = [t["i"] for t in trades]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    # Real trades: stamped inside a real S&P 500 day (the bundled bar) and priced within that day's range.
    s = load_series("SPX")
    day_ns = 86_400 * 1_000_000_000
    for t in trades:
        ts = int(datetime.fromisoformat(t["t"][:26].rstrip("Z") + "+00:00").timestamp()) * 1_000_000_000
        i = int(np.searchsorted(s.ts, ts - ts % day_ns))
        assert s.ts[i] == ts - ts % day_ns, t
        assert s.low[i] - 1e-6 <= t["p"] <= s.high[i] + 1e-6, t
        assert t["s"] > 0


@pytest.mark.slow
def test_stream_without_source_runs_the_configured_sources(tmp_path: Path) -> None:
    """`realtime.sources` in the overlay (production.yaml's structure, pointed at a local exchange) is what runs."""
    with ExchangeThread(ExchangeConfig(feed="simulated", rate=500, timestamps="now")) as ex:
        overlay = tmp_path / "overlay.yaml"
        overlay.write_text(
            "realtime:\n"
            "  bus: memory\n"
            "  sources:\n"
            "    - type: alpaca\n"
            f"      symbols: [AAPL, MSFT]\n      url: {ex.url('alpaca')}\n"
        )
        out = subprocess.run(
            [GPT_TRADER, "-c", str(overlay), "stream", "--symbols", "AAPL", "--max-bars", "2", "--duration", "60"],
            cwd=ROOT, env=cli_env(**KEYS), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "alpaca AAPL 1s bars" in out.stdout
    rows = table_rows(out.stdout)
    assert len(rows) >= 2
    assert {r[1] for r in rows} == {"AAPL"}  # --symbols kept AAPL of the configured AAPL, MSFT


def test_stream_configured_source_errors_name_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("GPT_TRADER_CONFIG", raising=False)
    runner = CliRunner()
    replay = tmp_path / "replay.yaml"
    replay.write_text(
        "realtime:\n  sources:\n    - {type: alpaca, symbols: [SPY]}\n    - {type: replay, symbols: [AAPL]}\n"
    )
    result = runner.invoke(app, ["-c", str(replay), "stream", "--duration", "1"])
    assert result.exit_code == 2
    assert "realtime.sources.1.symbols: replay has no bundled data for ['AAPL']" in result.output
    bad_url = tmp_path / "url.yaml"
    bad_url.write_text("realtime:\n  sources:\n    - {type: alpaca, symbols: [SPY], url: 'https://example.com'}\n")
    result = runner.invoke(app, ["-c", str(bad_url), "stream", "--duration", "1"])
    assert result.exit_code == 2
    assert "realtime.sources.0.url" in result.output
    result = runner.invoke(app, ["stream", "--symbols", "QQQ", "--duration", "1"])  # default.yaml: replay SPX only
    assert result.exit_code == 2
    assert "--symbols ['QQQ'] not in realtime.sources" in result.output
