"""`gpt-trader dashboard`: serve the monitoring page over a demo session replayed from bundled real bars.

The live trading flow will host the same app on its own components (`DashboardServer(LiveSource(monitor, portfolio,
scaler, reports_dir))`); until it exists this command builds them from a replay so the page shows real moving data.
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from gpt_trader.cli.app import app, console, load, run_command

TOKEN_ENV = "GPT_TRADER_DASHBOARD_TOKEN"


@app.command("dashboard")
def dashboard(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Bind address; anything beyond loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).", min=0, max=65535)] = 8050,
    token: Annotated[
        str | None,
        typer.Option(help=f"Access token (>= 16 chars); prefer the {TOKEN_ENV} variable.", envvar=TOKEN_ENV),
    ] = None,
    demo_seconds: Annotated[
        float, typer.Option("--demo-seconds", help="Stop after this many seconds (0: run until Ctrl-C).", min=0)
    ] = 0.0,
    symbols: Annotated[str, typer.Option(help="Bundled symbols the demo trades, comma-separated.")] = "SPX,IXIC",
    start: Annotated[str, typer.Option(help="First replayed day (YYYY-MM-DD).")] = "2007-01-01",
    speed: Annotated[float, typer.Option(help="Replayed bars per second.", min=0.1, max=1000)] = 4.0,
) -> None:
    """Serve the live monitoring page (equity, positions, P&L, alerts, pipeline, latency, scaling) and print its URL."""
    from gpt_trader.monitoring.dashboard.app import DashboardServer, check_bind
    from gpt_trader.monitoring.dashboard.demo import DemoSession
    from gpt_trader.scaling.autoscaler import AutoScaler
    from gpt_trader.trading.costs import CostModel

    def body() -> None:
        check_bind(host, token)  # before loading anything: a refused bind should fail at once
        settings = load(ctx)
        scaling = settings.scaling.model_copy(
            update={"actuator": settings.scaling.actuator.model_copy(update={"kind": "recording"})}
        )
        session = DemoSession(
            tuple(s.strip().upper() for s in symbols.split(",") if s.strip()),
            start=date.fromisoformat(start),
            bars_per_sec=speed,
            reports_dir=Path(settings.paths.reports),
            scaler=AutoScaler(scaling),
            cost_model=CostModel(settings.costs),
        )
        server = DashboardServer(session.source(), host=host, port=port, token=token)
        try:
            server.start()
            session.start()
            console.print(
                f"dashboard: [bold]{server.url}[/]  (demo replay of {symbols}; Ctrl-C stops)", highlight=False
            )
            deadline = time.monotonic() + demo_seconds if demo_seconds > 0 else None
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
            session.stop()
        equity = session.portfolio.equity()
        console.print(f"replayed {session.bars_replayed} bars; demo equity {equity:,.2f}", highlight=False)

    run_command(body)
