"""`gpt-trader scale`: replay bars through the AutoScaler and show each change of allocation with its reason."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

import typer
from rich.table import Table

from gpt_trader.cli.app import app, console, load, run_command
from gpt_trader.core.clock import utc_midnight


@app.command("scale")
def scale(
    ctx: typer.Context,
    symbol: Annotated[str, typer.Option(help="Bundled symbol to replay.")] = "SPX",
    start: Annotated[str | None, typer.Option(help="First day (YYYY-MM-DD).")] = None,
    end: Annotated[str | None, typer.Option(help="Last day, exclusive (YYYY-MM-DD).")] = None,
    prefect: Annotated[
        bool, typer.Option(help="Apply decisions to the real Prefect work pools (PREFECT_API_URL).")
    ] = False,
    max_local_workers: Annotated[int, typer.Option(help="Local worker processes the Prefect actuator may run.")] = 0,
) -> None:
    """Classify the market bar by bar and print every scaling decision that changes the allocation."""
    from gpt_trader.core.timeframe import Timeframe
    from gpt_trader.data.sources.bundled import CATALOG, BundledSource
    from gpt_trader.scaling import AutoScaler

    def body() -> None:
        settings = load(ctx)
        actuator = settings.scaling.actuator.model_copy(
            update={"kind": "prefect" if prefect else "recording", "max_local_workers": max_local_workers}
        )
        config = settings.scaling.model_copy(update={"actuator": actuator})
        bars = BundledSource().fetch(symbol, _day(start), _day(end), Timeframe.parse(CATALOG[symbol].timeframe))
        table = Table(title=f"Scaling decisions replaying {symbol} ({bars.height} bars)")
        for col in ("date", "condition", "workers", "$/hour", "training", "reason"):
            table.add_column(col)
        previous = None
        with AutoScaler(config) as scaler:
            for row in bars.iter_rows(named=True):
                decision = scaler.update_market_data(row["close"], row["volume"], ts=row["ts"])
                if not decision.same_allocation(previous):
                    table.add_row(
                        str(row["ts"])[:10],
                        decision.condition.name,
                        str(decision.workers),
                        f"{decision.cost_usd_per_hour:.2f}",
                        "paused" if decision.training_paused else "running",
                        decision.reason,
                    )
                previous = decision
            if prefect:
                scaler.wait_applied(timeout=30)
        console.print(table)

    run_command(body)


def _day(text: str | None) -> datetime | None:
    return None if text is None else utc_midnight(date.fromisoformat(text))
