"""Run a live paper-trading session end to end: local exchange -> websocket -> pipeline -> bars -> `LiveSession`.

The exchange replays bundled real bars from `start` as trades over Alpaca's market-data protocol on loopback, so
the session exercises the same path a real feed would: parsing, clock sync, bar building, then features, models,
risk, the paper broker and the state store. Bars before `start` warm the feature state.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from gpt_trader.core.clock import utc_midnight
from gpt_trader.core.errors import ConfigError
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.core.types import Bar
from gpt_trader.settings import Settings
from gpt_trader.trading.batcher import BarBatcher

log = logging.getLogger(__name__)
# The loopback exchange accepts any non-empty key pair; real keys never go to it.
LOOPBACK_KEYS = {"APCA_API_KEY_ID": "local-exchange", "APCA_API_SECRET_KEY": "local-exchange"}


@dataclass(frozen=True, slots=True)
class LiveOptions:
    """What to replay and how fast."""

    symbols: tuple[str, ...] = ("SPX",)
    start: date = date(2018, 1, 2)
    end: date | None = None
    duration_secs: float = 60.0
    # Trades per second from the exchange; each daily bar is `ticks_per_bar` trades.
    rate: float = 400.0
    ticks_per_bar: int = 20
    strategy: str = "live"
    dashboard_port: int | None = None
    dashboard_token: str | None = None
    # Start the strategy's paper book from scratch (its saved state is cleared first) instead of resuming it.
    fresh: bool = False


@dataclass(slots=True)
class LiveReport:
    """The session's figures plus what the pipeline saw."""

    summary: dict[str, Any]
    bars_streamed: int
    pipeline: dict[str, Any]
    alerts: list[tuple[str, str]] = field(default_factory=list)
    dashboard_url: str | None = None


async def run_live(
    settings: Settings, options: LiveOptions, *, on_bar: Callable[[dict[str, Any]], None] | None = None
) -> LiveReport:
    """Replay `options.symbols` from `options.start` through the live path for up to `duration_secs`."""
    from gpt_trader.data.sources.bundled import BundledSource
    from gpt_trader.realtime import DataSource, InProcessBus, RealtimePipeline, StreamConfig
    from gpt_trader.realtime.config import RealtimeConfig
    from gpt_trader.realtime.exchange import ExchangeConfig, LocalExchange

    day = Timeframe.parse("1d")
    source = BundledSource()
    frames = {s: source.fetch(s, None, _midnight(options.end), day) for s in options.symbols}
    start_ts = _midnight(options.start)
    history = {s: [Bar(**r) for r in f.filter(f["ts"] < start_ts).iter_rows(named=True)] for s, f in frames.items()}
    tape_bars = {s: f.filter(f["ts"] >= start_ts).height for s, f in frames.items()}
    if min(tape_bars.values(), default=0) == 0:
        raise ConfigError(f"no bundled bars for {list(options.symbols)} on or after {options.start}")
    start_bars = {len(h) for h in history.values()}
    if len(start_bars) != 1:
        raise ConfigError(f"symbols {list(options.symbols)} do not share a calendar from {options.start}")

    alerts: list[tuple[str, str]] = []
    lock = threading.RLock()
    session, monitor, scaler, store = build_session(settings, options, lambda s, m: alerts.append((s, m)))
    session.start(history)
    dashboard = _start_dashboard(settings, options, monitor, session, scaler, lock)

    exchange = LocalExchange(
        ExchangeConfig(
            feed="replay",
            rate=options.rate,
            ticks_per_bar=options.ticks_per_bar,
            timestamps="original",
            start_bar=start_bars.pop(),
            max_ticks=sum(tape_bars.values()) * options.ticks_per_bar,
            epoch_ns=time.time_ns() + 300_000_000,
        )
    )
    await exchange.start()
    realtime = RealtimeConfig(timeframes=["1d"], lateness_ms=0, max_future_secs=None)
    pipeline = RealtimePipeline(
        [StreamConfig(DataSource.ALPACA, list(options.symbols), url=exchange.url("alpaca"))],
        realtime,
        bus=InProcessBus(),
        environ=LOOPBACK_KEYS,
        history=source,
    )
    queue: asyncio.Queue[Any] = asyncio.Queue()
    pipeline.add_bar_listener(lambda bar: queue.put_nowait(bar) if bar.final and bar.timeframe == "1d" else None)
    batcher = BarBatcher(options.symbols, settings.trading.live.batch_wait_secs)
    streamed = 0
    seen: set[tuple[str, datetime]] = set()
    deadline = time.monotonic() + options.duration_secs
    expected = sum(tape_bars.values())
    last_poll = time.monotonic()
    reported = (0, 0)

    def decide(batch: list[Bar]) -> None:
        nonlocal reported
        with lock:
            outcomes = session.on_bars(batch, bar_length=day.delta)
        reported = _report_pipeline(monitor, pipeline, reported)
        if on_bar is not None:
            for outcome in outcomes:
                on_bar({"ts": outcome.ts, "symbol": outcome.symbol, **session.summary()})

    def refresh() -> None:
        with lock:  # a swap (and the new model's probe on the live book) never overlaps a decision
            session.refresh_models()

    try:
        await pipeline.start()
        total_ticks = sum(tape_bars.values()) * options.ticks_per_bar
        idle_since = time.monotonic()
        while time.monotonic() < deadline and streamed < expected:
            try:
                live_bar = await asyncio.wait_for(queue.get(), timeout=0.2)
            except TimeoutError:
                for batch in batcher.ready():  # waited long enough for a missing symbol
                    decide(batch)
                # The tape's last bar has no later trade to close it: once everything was sent and the feed
                # is quiet, close the open windows (the bars are complete) and let them through.
                if exchange.stats.ticks_sent >= total_ticks and time.monotonic() - idle_since > 1.0:
                    for bar in pipeline.flush_bars():
                        if bar.timeframe == "1d":
                            queue.put_nowait(bar)
                    if queue.empty():
                        break
                continue
            idle_since = time.monotonic()
            while True:
                bar = live_bar.to_bar()
                if (bar.symbol, bar.ts) not in seen:  # a window closed by the final flush can come twice
                    seen.add((bar.symbol, bar.ts))
                    streamed += 1
                    batcher.add(bar)
                if queue.empty():
                    break
                live_bar = queue.get_nowait()
            for batch in batcher.ready():
                decide(batch)
            if time.monotonic() - last_poll > settings.trading.live.registry_poll_secs:
                await asyncio.to_thread(refresh)  # swaps land between bars: the next bar sees them
                last_poll = time.monotonic()
        for batch in batcher.flush():
            decide(batch)
    finally:
        session.publish_shadow()  # the live evidence so far, for the promotion gate
        stats = pipeline.stats()
        await pipeline.close()
        await exchange.stop()
        if dashboard is not None:
            dashboard.stop()
        monitor.stop()
        store.close()
    return LiveReport(session.summary(), streamed, stats, alerts, dashboard.url if dashboard else None)


def build_session(
    settings: Settings, options: LiveOptions, on_alert: Callable[[str, str], None]
) -> tuple[Any, Any, Any, Any]:
    """The session and the monitor, scaler and state store it runs with, from the settings."""
    from gpt_trader.monitoring import SystemMonitor
    from gpt_trader.registry.lifecycle import registry_client
    from gpt_trader.scaling import AutoScaler
    from gpt_trader.serving.champion import ChampionSlot
    from gpt_trader.trading.costs import CostModel
    from gpt_trader.trading.execution import PaperBroker
    from gpt_trader.trading.session import LiveSession, ModelRunner
    from gpt_trader.trading.state import StateStore

    trading = settings.trading
    if trading.execution.broker != "paper":
        raise ConfigError("the replayed live session trades on paper only (trading.execution.broker: paper)")
    import torch

    torch.set_num_threads(trading.live.inference_threads)
    # Also sets MLflow's process-wide URIs, which `mlflow.pyfunc.load_model` (the champion loader) resolves through.
    client = registry_client(settings)
    max_age = trading.live.max_model_age_hours
    age = timedelta(hours=max_age) if max_age else None

    def runner(name: str, kind: str, alias: str = "champion") -> ModelRunner:
        slot = ChampionSlot(name, client, alias=alias, on_alert=on_alert, max_age=age)
        return ModelRunner(slot, kind, symbol_map=trading.live.model_symbol_map)

    registry = settings.registry
    shadow = [
        runner(registry.transformer_model, "transformer", "challenger"),
        runner(registry.rl_ppo_model, "rl", "challenger"),
    ]
    costs = CostModel(settings.costs)
    state_url = trading.state.url
    if state_url.startswith("sqlite:///") and not Path(state_url.removeprefix("sqlite:///")).is_absolute():
        state_url = f"sqlite:///{Path(settings.paths.data) / 'trading' / f'{options.strategy}.db'}"
    store = StateStore(state_url, strategy=options.strategy)
    if options.fresh:
        store.clear()
    monitor = SystemMonitor(settings.monitoring)
    monitor.start()
    scaler = AutoScaler(settings.scaling)
    session = LiveSession(
        trading=trading,
        features=settings.features,
        costs=costs,
        broker=PaperBroker(costs, initial_cash=Decimal(str(trading.execution.initial_cash_usd))),
        store=store,
        transformer=runner(registry.transformer_model, "transformer"),
        rl=runner(registry.rl_ppo_model, "rl"),
        shadow=shadow if trading.live.shadow_challenger else [],
        monitor=monitor,
        scaler=scaler,
        on_alert=on_alert,
    )
    return session, monitor, scaler, store


def _start_dashboard(
    settings: Settings, options: LiveOptions, monitor: Any, session: Any, scaler: Any, lock: Any
) -> Any:
    if options.dashboard_port is None:
        return None
    from gpt_trader.monitoring.dashboard.app import DashboardServer
    from gpt_trader.monitoring.dashboard.source import LiveSource

    source = LiveSource(monitor, session.portfolio, scaler, Path(settings.paths.reports), lock=lock)
    return DashboardServer(source, "127.0.0.1", options.dashboard_port, options.dashboard_token).start()


def _report_pipeline(monitor: Any, pipeline: Any, previous: tuple[int, int]) -> tuple[int, int]:
    """Send the monitor the ticks and dead letters since the previous report; returns the new totals."""
    stats = pipeline.stats()
    ticks, dead = int(stats.get("ticks_accepted", 0)), int(pipeline.dead_letters.total)
    monitor.record_pipeline_metrics(
        ticks_ingested=ticks - previous[0],
        errors=dead - previous[1],
        dead_letters=dead - previous[1],
        source="alpaca-local",
        last_tick_at=datetime.now(UTC),
    )
    return ticks, dead


def _midnight(day: date | None) -> datetime | None:
    return None if day is None else utc_midnight(day)
