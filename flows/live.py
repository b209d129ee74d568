"""`live_flow`: the long-running trading session (replayed real data through the local exchange, or the streams
configured in `realtime.sources` with `feed="sources"`)."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any, Literal

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.retries import IO_RETRIES
from gpt_trader.core.errors import ConfigError
from gpt_trader.core.markdown import markdown_table
from gpt_trader.settings import Settings, load_settings
from gpt_trader.trading.runner import LiveOptions, run_live


# Feeds, broker and registry are remote: a session that died of a network failure its own reconnects could not
# ride out is restarted, and resumes from its state store.
@task(name="run-live-session", cache_policy=NO_CACHE, **IO_RETRIES)
def live_task(settings: Settings, options: LiveOptions) -> dict[str, Any]:
    """Run the session until the duration or the tape ends; returns its summary."""
    report = asyncio.run(run_live(settings, options))
    return {**report.summary, "bars_streamed": report.bars_streamed, "alerts": report.alerts[-20:]}


@flow(name="live", log_prints=True)
def live_flow(
    config: str | None = None,
    params: str = "params.yaml",
    symbols: str = "SPX",
    start: str = "2018-01-02",
    end: str | None = None,
    duration_secs: float = 3600.0,
    rate: float = 400.0,
    strategy: str = "live",
    dashboard_port: int | None = None,
    feed: str = "replay",
    timeframe: str = "1d",
    max_bars: int | None = None,
) -> dict[str, Any]:
    """Trade the champions on paper; the state store makes a restarted run resume where it stopped."""
    options = LiveOptions(
        symbols=tuple(s.strip() for s in symbols.split(",") if s.strip()),
        start=date.fromisoformat(start),
        end=date.fromisoformat(end) if end else None,
        duration_secs=duration_secs,
        rate=rate,
        strategy=strategy,
        dashboard_port=dashboard_port,
        feed=_feed(feed),
        timeframe=timeframe,
        max_bars=max_bars,
    )
    summary = live_task(load_settings(config, params=params), options)
    nested = ("alerts", "positions", "shadow_pnl", "shadow_evidence")
    # Money to the cent (the generic table keeps 4 significant digits: 99,568.26 would read 9.957e+04).
    rows = [{"figure": k, "value": f"{v:,.2f}" if isinstance(v, float) else v} for k, v in summary.items()
            if k not in nested]  # fmt: skip
    create_markdown_artifact(markdown_table(rows), key="live-session", description="Live paper session P&L")
    return summary


def _feed(name: str) -> Literal["replay", "sources"]:
    if name not in ("replay", "sources"):
        raise ConfigError(f"feed must be 'replay' or 'sources', got {name!r}")
    return "sources" if name == "sources" else "replay"
