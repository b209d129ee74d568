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
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

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
    """What to trade, from which feed, and for how long.

    `feed="replay"`: the bundled bars of `symbols` from `start` (to `end`) replayed as trades by a local exchange
    over Alpaca's protocol, at `rate`. `feed="sources"`: the streams configured in `realtime.sources` (every symbol
    they carry; `symbols` is ignored), `timeframe` bars; bars before `start` from the captured (validated) data
    or the bundled data warm the features.
    """

    symbols: tuple[str, ...] = ("SPX",)
    start: date = date(2018, 1, 2)
    end: date | None = None
    duration_secs: float = 60.0
    feed: Literal["replay", "sources"] = "replay"
    timeframe: str = "1d"
    # Stop after this many final bars have been processed (None: the duration or the end of the tape).
    max_bars: int | None = None
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


@dataclass(slots=True)
class _Feed:
    """Where the session's bars come from: the pipeline it builds (and the local exchange a replay drives)."""

    symbols: tuple[str, ...]
    timeframe: Timeframe
    history: dict[str, list[Bar]]
    # Builds the pipeline once the session starts, given the local exchange's URL (None without one) and the
    # Prometheus registry its metrics join (the monitor's: source health, clock offsets and the bus on one endpoint).
    pipeline: Callable[[str | None, Any], Any]
    exchange: Any = None  # a replay's ExchangeConfig (the exchange starts with the session)
    expected_bars: int | None = None  # a replay's tape length; None for live sources
    total_ticks: int | None = None


def _replay_feed(settings: Settings, options: LiveOptions) -> _Feed:
    """Bundled bars of `options.symbols` from `options.start`, replayed as trades by a local exchange."""
    from gpt_trader.data.sources.bundled import BundledSource
    from gpt_trader.realtime import DataSource, RealtimePipeline, StreamConfig
    from gpt_trader.realtime.exchange import ExchangeConfig

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
    total_ticks = sum(tape_bars.values()) * options.ticks_per_bar
    # Paced from its epoch, set when it starts (`run_live`): the session's start-up must not eat into the tape.
    exchange = ExchangeConfig(
        feed="replay",
        rate=options.rate,
        ticks_per_bar=options.ticks_per_bar,
        timestamps="original",
        start_bar=start_bars.pop(),
        max_ticks=total_ticks,
    )
    realtime = _session_realtime(settings, options, {"timeframes": ["1d"], "lateness_ms": 0, "max_future_secs": None})

    def pipeline(url: str | None, registry: Any) -> Any:  # the exchange's URL is known once it listens
        return RealtimePipeline(
            [StreamConfig(DataSource.ALPACA, list(options.symbols), url=url)],
            realtime,
            environ=LOOPBACK_KEYS,
            history=source,
            registry=registry,
        )

    return _Feed(options.symbols, day, history, pipeline, exchange, sum(tape_bars.values()), total_ticks)


def _sources_feed(settings: Settings, options: LiveOptions) -> _Feed:
    """The streams of `realtime.sources`; the features warm up on stored bars before `options.start`."""
    from gpt_trader.realtime import RealtimePipeline
    from gpt_trader.realtime.config import stream_configs

    configs = stream_configs(settings.realtime)
    symbols = tuple(dict.fromkeys(s for c in configs for s in c.symbols))
    timeframe = Timeframe.parse(options.timeframe)
    realtime = _session_realtime(settings, options, {"timeframes": [str(timeframe)]})
    history = {s: _warm_up_bars(settings, s, timeframe, _midnight(options.start)) for s in symbols}
    return _Feed(
        symbols,
        timeframe,
        history,
        lambda _, registry: RealtimePipeline(configs, realtime, providers=settings.data.providers, registry=registry),
    )


def _session_realtime(settings: Settings, options: LiveOptions, update: dict[str, Any]) -> Any:
    """The configured real-time section for this session: its bus under a prefix of the strategy's own, so a
    session never reads another strategy's bars."""
    prefix = f"{settings.realtime.bus_prefix}live:{options.strategy}:"
    return settings.realtime.model_copy(update={**update, "bus_prefix": prefix})


def _warm_up_bars(settings: Settings, symbol: str, timeframe: Timeframe, before: datetime | None) -> list[Bar]:
    """Stored bars of `symbol` before `before`: the validated capture of a configured dataset, else the bundled
    series; none when neither has it (the features then warm up on live bars)."""
    from gpt_trader.data.sources.bundled import BundledSource
    from gpt_trader.data.store import dataset_path, read_bars

    frame = None
    for spec in settings.data.datasets:
        path = dataset_path(Path(settings.paths.data), "validated", spec)
        if spec.symbol == symbol and Timeframe.parse(spec.timeframe) == timeframe and path.exists():
            frame = read_bars(path)
            break
    if frame is None:
        try:
            frame = BundledSource().fetch(symbol, None, before, timeframe)
        except Exception as exc:  # not a bundled symbol: nothing stored to warm up on
            log.info("no stored %s bars of %s to warm the features (%s)", str(timeframe), symbol, exc)
            return []
    if before is not None:
        frame = frame.filter(frame["ts"] < before)
    return [Bar(**r) for r in frame.select([f.name for f in fields(Bar)]).iter_rows(named=True)]


async def run_live(
    settings: Settings, options: LiveOptions, *, on_bar: Callable[[dict[str, Any]], None] | None = None
) -> LiveReport:
    """Run the live path from `options.feed` for up to `duration_secs` (or the end of a replay's tape).

    The pipeline publishes its bars on the bus configured in `realtime` (in-process by default, Redis Streams
    with `realtime.bus: redis`); the session reads the final ones through a consumer group and acknowledges each
    only after committing it, so with Redis a killed session finds its uncommitted bars again on restart. The
    pipeline's source health reaches the session: a symbol whose feed is down trades no new exposure.
    """
    from gpt_trader.trading.bus_bars import BusBar, BusBarReader

    feed = _replay_feed(settings, options) if options.feed == "replay" else _sources_feed(settings, options)
    symbols, timeframe = feed.symbols, feed.timeframe
    alerts: list[tuple[str, str]] = []
    lock = threading.RLock()
    session, monitor, scaler, store = build_session(settings, options, lambda s, m: alerts.append((s, m)))
    session.start(feed.history)
    dashboard = _start_dashboard(settings, options, monitor, session, scaler, lock)
    exchange = None
    if feed.exchange is not None:
        from gpt_trader.realtime.exchange import LocalExchange

        # The tape starts when the pipeline subscribes: however long it takes to connect, no bar is lost.
        exchange = LocalExchange(replace(feed.exchange, epoch_ns=None, start_on_subscribe=True))
        await exchange.start()
    pipeline = feed.pipeline(exchange.url("alpaca") if exchange is not None else None, monitor.registry)
    reader = BusBarReader(pipeline.bus, symbols, str(timeframe), group=f"session-{options.strategy}")
    batcher = BarBatcher(symbols, settings.trading.live.batch_wait_secs)
    unacked: dict[tuple[str, datetime], list[BusBar]] = {}
    streamed = 0
    seen: set[tuple[str, datetime]] = set()
    deadline = time.monotonic() + options.duration_secs
    expected = min(feed.expected_bars or 2**62, options.max_bars or 2**62)
    last_poll = time.monotonic()
    reported = (0, 0)
    feed_up: dict[str, bool] = {}  # symbol -> has a healthy source, from the first time one served it

    async def decide(batch: list[Bar]) -> None:
        nonlocal reported
        with lock:
            outcomes = session.on_bars(batch, bar_length=timeframe.delta)
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
            if streamed >= expected:  # `max_bars` reached: left unacked, a later session picks them up
                break
            seen.add(key)
            streamed += 1
            unacked.setdefault(key, []).append(item)
            batcher.add(bar)
        await reader.ack(repeats)

    def watch_feeds() -> None:
        """Tell the session which symbols have no healthy source (a stalled or lost feed, in wall time)."""
        for symbol in symbols:
            up = pipeline.active_source(symbol) is not None
            # Only changes after a source first served the symbol: before its first trade there is no source
            # yet, which is no outage (a restarted session must not flatten what it holds while connecting).
            was = feed_up.get(symbol)
            if was is None and not up:
                continue
            if was is not None and was != up:
                reason = "feed back" if up else "no healthy source streams it"
                with lock:
                    session.set_feed_status(symbol, up, reason)
            feed_up[symbol] = up

    def refresh() -> None:
        with lock:  # a swap (and the new model's probe on the live book) never overlaps a decision
            session.refresh_models()

    try:
        await reader.start(fresh=options.fresh)
        await take(await reader.pending())  # delivered before a crash and never committed: the session skips
        await pipeline.start()  # what it had committed already
        idle_since = time.monotonic()
        while time.monotonic() < deadline and streamed < expected:
            got = await reader.read(block_ms=200)
            watch_feeds()
            if not got:
                for batch in batcher.ready():  # waited long enough for a missing symbol
                    await decide(batch)
                # The tape's last bar has no later trade to close it: once everything was sent and the feed
                # is quiet, close the open windows (the bars are complete) and let them through the bus.
                sent_all = exchange is not None and exchange.stats.ticks_sent >= (feed.total_ticks or 0)
                quiet = sent_all and time.monotonic() - idle_since > 1.0
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
        if exchange is not None:
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
    rl_model = registry.rl_dqn_model if trading.live.rl_model == "dqn" else registry.rl_ppo_model
    shadow = [
        runner(registry.transformer_model, "transformer", "challenger"),
        runner(rl_model, "rl", "challenger"),
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
        rl=runner(rl_model, "rl"),
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
    if options.feed == "replay" and host not in ("127.0.0.1", "localhost", "::1"):
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
