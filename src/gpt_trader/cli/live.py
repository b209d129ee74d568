"""`gpt-trader live`: a trading session on replayed real data through the local exchange, or on the configured
real-time sources."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import typer
from rich.table import Table

from gpt_trader.cli.app import app, console, err_console, load, run_command
from gpt_trader.core.errors import ConfigError


@app.command("live")
def live(
    ctx: typer.Context,
    duration: Annotated[float, typer.Option("--duration", "-d", help="Seconds to run at most.")] = 60.0,
    symbols: Annotated[str, typer.Option(help="Comma-separated bundled symbols sharing a calendar.")] = "SPX",
    start: Annotated[
        str, typer.Option(help="First replayed day (YYYY-MM-DD); earlier bars warm the features.")
    ] = "2018-01-02",
    end: Annotated[str | None, typer.Option(help="Last replayed day, exclusive (default: end of the data).")] = None,
    rate: Annotated[float, typer.Option(help="Trades per second from the local exchange (20 trades per bar).")] = 400.0,
    strategy: Annotated[str, typer.Option(help="Strategy id: names the state store, so a rerun resumes it.")] = "live",
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Clear the strategy's saved paper book first instead of resuming it.")
    ] = False,
    dashboard: Annotated[int | None, typer.Option(help="Also serve the dashboard on this loopback port.")] = None,
    feed: Annotated[
        str,
        typer.Option(help="replay: bundled bars through a local exchange; sources: the streams in realtime.sources."),
    ] = "replay",
    timeframe: Annotated[str, typer.Option(help="Bar length traded with --feed sources (e.g. 1m, 1h, 1d).")] = "1d",
    max_bars: Annotated[int | None, typer.Option(help="Stop after this many bars.")] = None,
) -> None:
    """Stream bars through features, champion models, risk and the broker; print the P&L."""
    import asyncio

    from rich.live import Live

    from gpt_trader.trading.runner import LiveOptions, run_live

    def body() -> None:
        settings = load(ctx)
        if feed not in ("replay", "sources"):
            raise ConfigError(f"--feed must be 'replay' or 'sources', got {feed!r}")
        options = LiveOptions(
            symbols=tuple(s.strip().upper() for s in symbols.split(",") if s.strip()),
            start=date.fromisoformat(start),
            end=date.fromisoformat(end) if end else None,
            duration_secs=duration,
            rate=rate,
            strategy=strategy,
            dashboard_port=dashboard,
            fresh=fresh,
            feed=feed,  # type: ignore[arg-type]  # checked above
            timeframe=timeframe,
            max_bars=max_bars,
        )
        with Live(console=err_console, refresh_per_second=4, transient=True) as view:
            report = asyncio.run(run_live(settings, options, on_bar=lambda row: view.update(_status(row))))
        summary = report.summary
        what = ", ".join(options.symbols) if options.feed == "replay" else "realtime.sources"
        table = Table(title=f"Live session: {what} from {options.start}")
        table.add_column("figure")
        table.add_column("value", justify="right")
        rows = [
            ("bars processed", str(summary["bars"])),
            ("fills", str(summary["trades"])),
            ("equity", f"${summary['equity']:,.2f}"),
            ("total P&L", f"${summary['total_pnl']:,.2f}"),
            ("realized / unrealized", f"${summary['realized_pnl']:,.2f} / ${summary['unrealized_pnl']:,.2f}"),
            ("commissions", f"${summary['commissions']:,.2f}"),
            ("positions", ", ".join(f"{s} {q:g}" for s, q in summary["positions"].items()) or "flat"),
            ("risk state", summary["risk_state"]),
            ("decision latency p50 / p99", f"{summary['decision_ms_p50']:.2f} / {summary['decision_ms_p99']:.2f} ms"),
            *(
                [("shadow scoring p50 (after the orders)", f"{summary['shadow_ms_p50']:.2f} ms")]
                if summary.get("shadow_ms_p50") is not None
                else []
            ),
            ("shadow P&L", ", ".join(f"{k} ${v:,.2f}" for k, v in summary["shadow_pnl"].items()) or "-"),
            *(
                (
                    f"shadow {name}",
                    f"{e['return']:+.2%} vs "
                    + (f"champion v{e['champion_version']}" if e["champion_version"] else "flat (no champion)")
                    + f" {e['champion_return']:+.2%} over {e['bars']} bars (tagged for the promotion gate)",
                )
                for name, e in summary["shadow_evidence"].items()
            ),
        ]
        for row in rows:
            table.add_row(*row)
        console.print(table)
        if summary["bars"] == 0 and report.bars_streamed > 0:
            console.print(
                f"Strategy '{strategy}' had already processed every replayed bar (its state resumes); "
                "pass --fresh to start its paper book over, or another --strategy.",
                highlight=False,
            )
        for severity, message in report.alerts[-5:]:
            console.print(f"[yellow]{severity}[/] {message}", highlight=False)

    run_command(body)


def _status(row: dict[str, Any]) -> Table:
    table = Table(show_header=False, box=None)
    table.add_row("bar", f"{row['symbol']} {row['ts']:%Y-%m-%d}", "equity", f"${row['equity']:,.2f}")
    table.add_row("P&L", f"${row['total_pnl']:,.2f}", "risk", row["risk_state"])
    return table
