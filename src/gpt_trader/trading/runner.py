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
    """Replay `options.symbols` from `options.start` through the live path for up to `duration_secs`.

    The pipeline publishes its bars on the bus configured in `realtime` (in-process by default, Redis Streams
    with `realtime.bus: redis`); the session reads the final ones through a consumer group and acknowledges each
    only after committing it, so with Redis a killed session finds its uncommitted bars again on restart.
    """
    from gpt_trader.data.sources.bundled import BundledSource
    from gpt_trader.realtime import DataSource, RealtimePipeline, StreamConfig
    from gpt_trader.realtime.exchange import ExchangeConfig, LocalExchange
    from gpt_trader.trading.bus_bars import BusBar, BusBarReader

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
    # The configured bus, under a prefix of this strategy's own: a replay never reads another session's bars.
    realtime = settings.realtime.model_copy(
        update={
            "timeframes": ["1d"],
            "lateness_ms": 0,
            "max_future_secs": None,
            "bus_prefix": f"{settings.realtime.bus_prefix}live:{options.strategy}:",
        }
    )
    pipeline = RealtimePipeline(
        [StreamConfig(DataSource.ALPACA, list(options.symbols), url=exchange.url("alpaca"))],
        realtime,
        environ=LOOPBACK_KEYS,
        history=source,
    )
    reader = BusBarReader(pipeline.bus, options.symbols, "1d", group=f"session-{options.strategy}")
    batcher = BarBatcher(options.symbols, settings.trading.live.batch_wait_secs)
    unacked: dict[tuple[str, datetime], list[BusBar]] = {}
    streamed = 0
    seen: set[tuple[str, datetime]] = set()
    deadline = time.monotonic() + options.duration_secs
    expected = sum(tape_bars.values())
    last_poll = time.monotonic()
    reported = (0, 0)

    async def decide(batch: list[Bar]) -> None:
        nonlocal reported
        with lock:
            outcomes = session.on_bars(batch, bar_length=day.delta)
        done = [b for bar in batch for b in unacked.pop((bar.symbol, bar.ts), [])]
        await reader.ack(done)  # committed by `on_bars`: only now may the bus forget them
        reported = _report_pipeline(monitor, pipeline, reported)
        if on_bar is not None:
            closes = {bar.symbol: bar.close for bar in batch}
            for outcome in outcomes:
                on_bar(
                    {"ts": outcome.ts, "symbol": outcome.symbol, "close": closes[outcome.symbol], **session.summary()}
                )

    async def take(bus_bars: list[BusBar]) -> None:
        nonlocal streamed
        repeats = []
        for item in bus_bars:
            bar = item.to_bar()
            key = (bar.symbol, bar.ts)
            if key in seen:  # a window closed by the final flush can come twice
                repeats.append(item)
                continue
            seen.add(key)
            streamed += 1
            unacked.setdefault(key, []).append(item)
            batcher.add(bar)
        await reader.ack(repeats)

    def refresh() -> None:
        with lock:  # a swap (and the new model's probe on the live book) never overlaps a decision
            session.refresh_models()

    try:
        await reader.start(fresh=options.fresh)
        await take(await reader.pending())  # delivered before a crash and never committed: the session skips
        await pipeline.start()  # what it had committed already
        total_ticks = sum(tape_bars.values()) * options.ticks_per_bar
        idle_since = time.monotonic()
        while time.monotonic() < deadline and streamed < expected:
            got = await reader.read(block_ms=200)
            if not got:
                for batch in batcher.ready():  # waited long enough for a missing symbol
                    await decide(batch)
                # The tape's last bar has no later trade to close it: once everything was sent and the feed
                # is quiet, close the open windows (the bars are complete) and let them through the bus.
                quiet = exchange.stats.ticks_sent >= total_ticks and time.monotonic() - idle_since > 1.0
                if quiet and not pipeline.flush_bars() and not len(batcher):
                    break
                continue
            idle_since = time.monotonic()
            await take(got)
            for batch in batcher.ready():
                await decide(batch)
            if time.monotonic() - last_poll > settings.trading.live.registry_poll_secs:
                await asyncio.to_thread(refresh)  # swaps land between bars: the next bar sees them
                last_poll = time.monotonic()
        for batch in batcher.flush():
            await decide(batch)
    finally:
        session.publish_shadow()  # the live evidence so far, for the promotion gate
        stats = pipeline.stats()
        await pipeline.close()
        await exchange.stop()
        if dashboard is not None:
            dashboard.stop()
        monitor.stop()
        store.close()
        broker_close = getattr(session.broker, "close", None)
        if broker_close is not None:
            broker_close()
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
    broker = _broker(settings, options)
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
        broker=broker
        if broker is not None
        else PaperBroker(costs, initial_cash=Decimal(str(trading.execution.initial_cash_usd))),
        store=store,
        transformer=runner(registry.transformer_model, "transformer"),
        rl=runner(registry.rl_ppo_model, "rl"),
        shadow=shadow if trading.live.shadow_challenger else [],
        monitor=monitor,
        scaler=scaler,
        on_alert=on_alert,
    )
    return session, monitor, scaler, store


def _broker(settings: Settings, options: LiveOptions) -> Any:
    """The Alpaca broker when `trading.execution.broker` is alpaca; None for the paper broker."""
    execution = settings.trading.execution
    if execution.broker == "paper":
        return None
    from urllib.parse import urlsplit

    from gpt_trader.data.sources.credentials import read_alpaca_credentials
    from gpt_trader.trading.alpaca import AlpacaBroker

    host = urlsplit(execution.alpaca_base_url).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        # Replayed bars are history: orders on a real account would fill at today's prices, not the bars'.
        raise ConfigError(
            f"trading.execution.broker: alpaca with the replayed feed needs a loopback alpaca_base_url "
            f"(a local server speaking Alpaca's API), got {execution.alpaca_base_url!r}"
        )
    return AlpacaBroker.from_config(execution, read_alpaca_credentials())


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
