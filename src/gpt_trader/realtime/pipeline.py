"""`RealtimePipeline`: websocket feeds -> normalize/validate -> dedup -> clock offset -> bars + buffers -> bus.

Per frame, in the feed's receive loop: parse (pure adapter), count and dead-letter bad messages, validate the
trades as arrays (symbol subscribed, finite positive price, sane size, timestamp not in the source's future),
drop duplicate trade ids, then route each symbol's trades: the symbol's *active* feed (highest priority that is
connected and fresh) feeds the bars and the live buffer; standby feeds fill a bounded shadow used for a gap-free
handover on failover. Feed loss opens a gap (bars held back from `final`); it closes at the next trade and is
backfilled from the historical API once its windows have closed.

Bus layout (stream names under the bus prefix): `ticks:<SYM>` (one entry per symbol per flush: a micro-batch of
trades as orjson columns), `bars:<tf>:<SYM>` (one entry per emitted bar revision), `deadletter`. The writer
(`_flusher`) publishes the queue every `flush_interval_ms`; while the bus fails it keeps everything queued (the feeds
wait once `max_pending_ticks` are queued), retries with exponential backoff, reports the outage in `bus_health()` and
the `bus_*` metrics, and `stop()` drains it for up to `bus_drain_timeout_secs`. Entries the bus refuses for good
(a key of another type, fields it cannot store) are dropped, logged and counted; they never block the others.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import operator
import random
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import orjson

from gpt_trader.core.errors import ConfigError, SourceError
from gpt_trader.realtime.bars import BarAggregator, Gap, LiveBar, pv_sum, volume_sum
from gpt_trader.realtime.buffer import KIND_QUOTE, KIND_TRADE, TickRing
from gpt_trader.realtime.bus import Bus, BusFieldError, Fields, InProcessBus, PublishError, check_fields
from gpt_trader.realtime.clock import OffsetEstimator
from gpt_trader.realtime.config import RealtimeConfig, StreamEndpoints
from gpt_trader.realtime.deadletter import DeadLetters, tick_raw
from gpt_trader.realtime.feed import Feed, Shadow, run_feed
from gpt_trader.realtime.health import RealtimeMetrics, SourceHealth, update_disagreement
from gpt_trader.realtime.models import DataSource, ParsedFrame, Reject, StreamConfig, TradeFrames, truncate_raw

# The compiled trade scanner (Alpaca, Polygon) loads with the pipeline: ~0.7 s from numba's cache (~7 s the first
# time, compiling), paid here rather than while a feed connects, where a replay's tape would run on without it.
from gpt_trader.realtime.sources import trade_scan  # noqa: F401
from gpt_trader.realtime.timestamps import datetime_to_ns, ns_to_datetime

if TYPE_CHECKING:
    import pandas as pd

    from gpt_trader.core.clock import Clock
    from gpt_trader.data.config import ProviderConfig
    from gpt_trader.data.sources.base import HistoricalSource
    from gpt_trader.realtime.exchange import LocalExchange

log = logging.getLogger(__name__)
_NS = 1_000_000_000
_LOCAL_SOURCES = (DataSource.REPLAY, DataSource.SIMULATED)
_SMALL = 8  # below this many trades, lists and plain loops beat numpy's per-call overhead
_TRADE_RUN_MAX = 128  # runs of fewer one-trade frames go through `_ingest_trade_run`'s loop, longer ones numpy's
_NO_QUOTE = (math.nan, math.nan, math.nan, math.nan)
# Bus writer retries: exponential from the base to the cap, and one summary line per interval while the bus is down.
_BUS_BACKOFF_BASE_SECS = 0.1
_BUS_BACKOFF_MAX_SECS = 2.0
_BUS_REPORT_SECS = 30.0


def _as_list(values: Any) -> list[Any]:
    """A numpy column as a list of Python scalars; lists pass through."""
    return values.tolist() if isinstance(values, np.ndarray) else values


def _covers(shadow: Shadow | None, last: int) -> bool:
    """True when a standby feed's trades reach back to `last`, the newest trade counted from the active feed.

    Compared by millisecond: feeds stamp at different precisions (Alpaca ns, the others ms), and `_after_last`
    matches the trades of that millisecond across feeds."""
    return bool(shadow and shadow.ticks) and shadow.ticks[0][0] // 1_000_000 <= last // 1_000_000  # type: ignore[union-attr]


def _newest(ts: Any, bound: int | None) -> int | None:
    """The newest of `ts` (a list or an int64 array) not past `bound` (None: no bound); None when none is."""
    if bound is None:
        return int(ts.max()) if isinstance(ts, np.ndarray) else max(ts)
    if isinstance(ts, np.ndarray):
        kept = ts[ts <= bound]
        return int(kept.max()) if len(kept) else None
    return max((t for t in ts if t <= bound), default=None)


def _oldest(ts: Any, bound: int) -> int | None:
    """The oldest of `ts` (a list or an int64 array) not past `bound`; None when none is."""
    if isinstance(ts, np.ndarray):
        kept = ts[ts <= bound]
        return int(kept.min()) if len(kept) else None
    return min((t for t in ts if t <= bound), default=None)


def _symbol_runs(
    syms: list[str], numbered: tuple[npt.NDArray[np.intp], list[str]] | None = None
) -> tuple[dict[str, int], npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The symbols of a run of trades numbered by first appearance, each trade's number, and the runs of consecutive
    trades of one symbol: where each starts and its symbol's number. Frames list a symbol's trades together, so
    runs are few; they are found by comparing neighbours in C, where a dict lookup per trade costs twice as much.
    `numbered`: the numbers and names as the parser gave them (`TradeFrames.codes`), taken as they are."""
    if numbered is not None:
        codes, distinct = numbered
        starts = np.flatnonzero(np.diff(codes, prepend=-1))  # the first trade starts a run: no code is -1
        return {s: c for c, s in enumerate(distinct)}, codes, starts, codes[starts]
    n = len(syms)
    names = np.array(syms, dtype=object)
    starts_l = [0, *(np.flatnonzero(names[1:] != names[:-1]) + 1).tolist()]
    code: dict[str, int] = {}
    run_codes = np.array([code.setdefault(syms[a], len(code)) for a in starts_l], dtype=np.intp)
    starts = np.array(starts_l, dtype=np.intp)
    if len(code) == 1:
        return code, np.zeros(n, dtype=np.intp), starts, run_codes
    bounds = np.append(starts, n)
    return code, np.repeat(run_codes, bounds[1:] - bounds[:-1]), starts, run_codes


def _ids_by_symbol(
    ids: list[Any],
    codes: npt.NDArray[np.intp],
    n_codes: int,
    starts: npt.NDArray[np.intp],
    run_codes: npt.NDArray[np.intp],
    order: npt.NDArray[np.intp],
) -> list[list[Any]]:
    """Each symbol's ids among the first `len(codes)`, in arrival order, by symbol number (`_symbol_runs`; `order`:
    the stable sort of `codes`). Few runs: a slice per run; many (interleaved symbols): gathered by `order`."""
    m = len(codes)
    k = int(np.searchsorted(starts, m))  # the runs that begin before `m`
    if k * _SMALL <= m:
        out: list[list[Any]] = [[] for _ in range(n_codes)]
        firsts = starts[:k].tolist()
        for a, b, c in zip(firsts, [*firsts[1:], m], run_codes[:k].tolist(), strict=True):
            out[c] += ids[a:b]
        return out
    ol = order.tolist()
    grouped = list(operator.itemgetter(*ol)(ids)) if m > 1 else [ids[ol[0]]]
    ends = np.cumsum(np.bincount(codes, minlength=n_codes)).tolist()
    return [grouped[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]


async def _in_daemon_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` in a daemon thread of its own: a history fetch still retrying over the network when the pipeline
    stops is abandoned, where in the loop's default executor (`asyncio.to_thread`) it would hold up `asyncio.run`'s
    exit, which joins that executor's threads, for as long as its retries last."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if done.done():  # cancelled (timed out, pipeline stopped): nobody waits for it
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(value)

    def run() -> None:
        try:
            value, error = fn(*args), None
        except BaseException as exc:  # handed to the awaiting task, which decides
            value, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: the result is no longer wanted
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=run, name="backfill-fetch", daemon=True).start()
    return await done


# After a run met a duplicate, this many runs of the symbol check their ids before adding them (see `_Dedup.add_new`).
_CAREFUL_CALLS = 64


class _Dedup:
    """Recently seen trade ids of one symbol, bounded to the newest `capacity`: a set plus the insertion order.

    The order is kept as the batches that were recorded (one list per call), so eviction drops whole batches at
    C speed (`difference_update`) and cuts the oldest one where the capacity falls inside it.
    """

    __slots__ = ("capacity", "careful", "chunks", "seen", "size")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.seen: set[Any] = set()
        self.chunks: deque[list[Any]] = deque()
        self.size = 0
        self.careful = 0  # calls of `add_new` left that check before they add (after one found a duplicate)

    def add_new(self, ids: list[Any]) -> bool:
        """Put `ids` in the set when every one is new and distinct (True, to be recorded with `record_added` or
        taken out again); otherwise leave the set as it was (False).

        Adds first and tells by how much the set grew: one probe of the (large, cache-missing) set per id instead of
        a check and an add. Undoing an add that met a duplicate rebuilds the set from the eviction order (whose ids
        are exactly the set's), so after that the next `_CAREFUL_CALLS` calls check first, as long as duplicates
        keep coming: a stream of them costs a check, not a rebuild, per call."""
        seen = self.seen
        before = len(seen)
        if self.careful:
            if seen.isdisjoint(ids):
                seen.update(ids)
                if len(seen) - before == len(ids):
                    self.careful -= 1
                    return True
                seen.difference_update(ids)  # repeats inside `ids`: none was in the set, so this undoes the update
            self.careful = _CAREFUL_CALLS
            return False
        seen.update(ids)
        if len(seen) - before == len(ids):
            return True
        seen.clear()
        seen.update(chain.from_iterable(self.chunks))
        self.careful = _CAREFUL_CALLS
        return False

    def fresh(self, ids: list[Any]) -> list[int] | None:
        """Indices of ids not seen before (None = all fresh, the common case); records them."""
        seen = self.seen
        if seen.isdisjoint(ids):
            before = len(seen)
            seen.update(ids)
            if len(seen) - before == len(ids):
                self._record(ids if type(ids) is list else list(ids))
                return None
            seen.difference_update(ids)  # repeats inside the batch: none was seen before, so this undoes update
        keep: list[int] = []
        batch: set[Any] = set()
        for i, x in enumerate(ids):
            if x not in seen and x not in batch:
                batch.add(x)
                keep.append(i)
        new = [ids[i] for i in keep]
        seen.update(new)
        self._record(new)
        return keep

    def add_fresh(self, ids: list[Any]) -> None:
        """Record ids the caller has checked are all new and distinct (as `fresh` would)."""
        self.seen.update(ids)
        self._record(ids)

    def record_added(self, ids: list[Any]) -> None:
        """`add_fresh` for ids the caller has already put in `seen` (new and distinct): their place in the
        eviction order, and the eviction."""
        self._record(ids)

    def _record(self, ids: list[Any]) -> None:
        if not ids:
            return
        self.chunks.append(ids)
        self.size += len(ids)
        excess = self.size - self.capacity
        chunks, seen = self.chunks, self.seen
        while excess > 0:
            oldest = chunks[0]
            if len(oldest) <= excess:
                chunks.popleft()
                seen.difference_update(oldest)
                self.size -= len(oldest)
                excess -= len(oldest)
            else:
                seen.difference_update(oldest[:excess])
                chunks[0] = oldest[excess:]
                self.size -= excess
                excess = 0


# Frame latencies per ticker interval that go into the receive-to-processed histogram (the newest of them).
_LATENCY_SAMPLES_PER_TICK = 200


class LatencyRecorder:
    """The last `capacity` latency samples in nanoseconds (fixed memory), for percentiles."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self.samples = array("q", bytes(8 * capacity))  # item stores are ~10x cheaper than into a numpy array
        self._view = np.frombuffer(self.samples, dtype=np.int64)  # the same memory, for stores of whole arrays
        self.count = 0

    def add(self, value_ns: int) -> None:
        """Record one sample."""
        self.samples[self.count % self.capacity] = value_ns
        self.count += 1

    def add_many(self, values_ns: Sequence[int] | npt.NDArray[np.int64]) -> None:
        """Record several samples, in order (as `add` for each)."""
        k = len(values_ns)
        if k == 0:
            return
        if k > self.capacity:
            self.count += k - self.capacity
            values_ns = values_ns[k - self.capacity :]
            k = self.capacity
        pos = self.count % self.capacity
        first = min(k, self.capacity - pos)
        if isinstance(values_ns, np.ndarray):  # a run's latencies, computed as an array: copied in C
            view = self._view
            view[pos : pos + first] = values_ns[:first]
            if k > first:
                view[: k - first] = values_ns[first:]
        else:
            self.samples[pos : pos + first] = array("q", values_ns[:first])
            if k > first:
                self.samples[: k - first] = array("q", values_ns[first:])
        self.count += k

    def percentiles(self, qs: Sequence[float] = (50, 99, 99.9)) -> dict[float, float]:
        """Percentiles in milliseconds (NaN when empty)."""
        n = min(self.count, self.capacity)
        if n == 0:
            return {q: math.nan for q in qs}
        values = np.percentile(np.frombuffer(self.samples, dtype=np.int64)[:n], list(qs)) / 1e6
        return dict(zip(qs, values.tolist(), strict=True))


class RealtimePipeline:
    """The seed's real-time pipeline: `await start()`, `get_live_data(symbol)`, `await stop()`.

    `configs` are in failover priority order (or set `StreamConfig.priority`). `history` backfills gaps: one
    historical source for every symbol or a mapping symbol -> source. Without it (and with `config.backfill:
    provider`), each symbol's gaps are backfilled from the history REST API of the sources that stream it, by
    priority (see `realtime.sources.history`), at the endpoints of `providers` (Settings' `data.providers`;
    default: the production URLs, overridden by GPT_TRADER_DATA__PROVIDERS__<KEY>).
    """

    def __init__(
        self,
        configs: Sequence[StreamConfig],
        config: RealtimeConfig | None = None,
        *,
        bus: Bus | None = None,
        registry: Any | None = None,
        history: HistoricalSource | Mapping[str, HistoricalSource] | None = None,
        clock: Clock | None = None,
        environ: Mapping[str, str] | None = None,
        seed: int | None = None,
        providers: ProviderConfig | None = None,
    ) -> None:
        if not configs:
            raise ConfigError("RealtimePipeline needs at least one StreamConfig")
        if config is None:
            config = RealtimeConfig(endpoints=StreamEndpoints.from_environ(environ))
        self.config = config
        self.configs = list(configs)
        self._environ = environ
        self._now_ns: Callable[[], int] = (lambda: datetime_to_ns(clock.now())) if clock is not None else time.time_ns
        self._rng = random.Random(seed)
        self.bus: Bus = bus if bus is not None else self._default_bus()
        self.metrics = RealtimeMetrics(registry)
        self.dead_letters = DeadLetters()
        self.aggregators = [
            BarAggregator(tf, int(config.lateness_ms * 1_000_000), source="stream") for tf in config.timeframes
        ]
        self.latency = LatencyRecorder()  # frame receipt -> bars updated
        self._latency_observed = 0  # `latency.count` already sampled into the Prometheus histogram
        self.exchange_latency = LatencyRecorder()  # exchange time (offset-corrected) -> bars updated
        self.bar_delay = LatencyRecorder(50_000)  # bar publish time minus window end (ms), provisional emissions
        self._history = history
        self._providers = providers
        # Each source's own history client, built on the first gap that needs it (None: it has none).
        self._provider_histories: dict[DataSource, HistoricalSource | None] = {}
        self._feeds: list[Feed] = []
        self._routes: dict[str, list[Feed]] = {}
        self._active: dict[str, Feed | None] = {}
        self._last_active_ts: dict[str, int] = {}
        self._tick_counters: dict[tuple[str, str], Any] = {}
        self._tick_counts: dict[tuple[str, str], int] = {}  # accepted ticks not yet in the Prometheus counters
        self._bar_counters: dict[tuple[str, str], Any] = {}
        self._overflow_counters: dict[str, Any] = {}
        self._last_trade_wall: dict[str, int] = {}
        self._recent_active: dict[str, deque[tuple[int, float, float]]] = {}
        # After a handover, the new active feed may still be behind the old one: its next live ticks up to the
        # old feed's last trade are already counted. symbol -> that last trade's ts, until the new feed passes it.
        self._catchup: dict[str, int] = {}
        self._quiet_ns = int(config.quiet_close_ms * 1_000_000)
        self._open_gaps: dict[str, list[Gap]] = {}
        self._buffers: dict[str, TickRing] = {}
        self._quote_state: dict[str, tuple[float, float, float, float]] = {}
        self._last_price: dict[str, float] = {}
        self._dedup: dict[str, _Dedup] = {}
        self._bars: dict[tuple[str, str], dict[int, LiveBar]] = {}
        self._listeners: list[Callable[[LiveBar], Any]] = []
        self._pending_ticks: dict[str, list[tuple[Any, ...]]] = {}
        self._pending_count = 0
        self._pending_entries: dict[str, list[Fields]] = {}
        self._flushed = asyncio.Event()
        self._flusher_task: asyncio.Task[None] | None = None
        self._parser_errors_logged: set[str | tuple[str, str]] = set()  # feeds (and their batched parse) logged
        # Bus writer health: down since (monotonic; None while up), failed flushes, entries lost and why.
        self._bus_down_since: float | None = None
        self._bus_next_report = 0.0
        self._bus_failures = 0
        self._bus_last_error = ""
        self._bus_dropped: dict[str, int] = {"rejected": 0, "invalid": 0, "stop": 0}
        self._bus_dropped_ticks = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._backfills: set[asyncio.Task[Any]] = set()
        self._exchanges: list[LocalExchange] = []
        self._switched_at_ns: dict[str, int] = {}
        self.ticks_accepted = 0
        self.ticks_published = 0
        self.started = False

    # --- construction helpers -----------------------------------------------------------------------------------
    def _default_bus(self) -> Bus:
        if self.config.bus == "redis":
            from gpt_trader.realtime.bus import RedisStreamsBus

            return RedisStreamsBus(
                self.config.redis_url, maxlen=self.config.bus_maxlen, prefix=self.config.bus_prefix,
                ttl_secs=self.config.redis_ttl_secs,
            )  # fmt: skip
        return InProcessBus(maxlen=self.config.bus_maxlen, prefix=self.config.bus_prefix)

    def _adapter(self, sc: StreamConfig) -> tuple[Any, str, bool]:
        """(adapter, base URL, check future timestamps) for one stream config."""
        endpoints = self.config.endpoints
        src = sc.source
        if src == DataSource.ALPACA or src in _LOCAL_SOURCES:
            from gpt_trader.data.sources.credentials import AlpacaCredentials, read_alpaca_credentials
            from gpt_trader.realtime.sources.alpaca import AlpacaAdapter

            if src in _LOCAL_SOURCES:
                from pydantic import SecretStr

                creds = AlpacaCredentials(key_id=SecretStr("local"), secret_key=SecretStr("local"))
                return AlpacaAdapter(creds), sc.url or "", self.config.replay.timestamps == "now"
            return AlpacaAdapter(read_alpaca_credentials(self._environ)), sc.url or endpoints.alpaca, True
        if src == DataSource.BINANCE:
            from gpt_trader.realtime.sources.binance import BinanceAdapter

            return BinanceAdapter(), sc.url or endpoints.binance, True
        if src == DataSource.POLYGON:
            from gpt_trader.data.sources.credentials import read_polygon_key
            from gpt_trader.realtime.sources.polygon import PolygonAdapter

            return PolygonAdapter(read_polygon_key(self._environ)), sc.url or endpoints.polygon, True
        if src == DataSource.IEX:
            from gpt_trader.realtime.sources.iex import IexAdapter

            return IexAdapter(), sc.url or endpoints.iex, True
        raise ConfigError(f"unknown data source {src!r}")

    # --- lifecycle ----------------------------------------------------------------------------------------------
    async def start(self, wait_for_data: bool = True) -> None:
        """Connect every feed; with `wait_for_data`, return once each symbol has a trade (or the start timeout)."""
        if self.started:
            return
        self._stop.clear()
        await self._build_feeds()
        for feed in self._feeds:
            self._tasks.append(
                asyncio.create_task(
                    run_feed(
                        feed,
                        self.config,
                        self._on_frame,
                        self._on_state,
                        self._stop,
                        rng=self._rng,
                        now_ns=self._now_ns,
                        on_frames=self._on_frames,
                    ),
                    name=f"feed-{feed.name}",
                )
            )
            self._tasks[-1].add_done_callback(self._feed_ended)
        self._tasks.append(asyncio.create_task(self._ticker(), name="pipeline-ticker"))
        self._flusher_task = asyncio.create_task(self._flusher(), name="pipeline-flusher")
        self._tasks.append(self._flusher_task)
        self.started = True
        # Every source's health series exists from the start: a scrape before the ticker's first pass (a loaded
        # machine, a fast replay) would otherwise find no series for it at all.
        self._publish_health(self._now_ns())
        if wait_for_data and self.config.start_timeout_secs > 0:
            deadline = time.monotonic() + self.config.start_timeout_secs
            while time.monotonic() < deadline:
                if all(self._last_price.get(s) is not None for s in self._routes):
                    break
                self._raise_if_failed()
                await asyncio.sleep(0.01)
            else:
                log.warning(
                    "pipeline: no trades yet for %s after %.1fs",
                    [s for s in self._routes if s not in self._last_price],
                    self.config.start_timeout_secs,
                )

    async def _build_feeds(self) -> None:
        """Create the feeds (and any embedded exchange) in priority order; no connection yet."""
        if self._feeds:
            return
        order = sorted(
            enumerate(self.configs), key=lambda ic: (ic[1].priority if ic[1].priority is not None else ic[0], ic[0])
        )
        names: set[str] = set()
        for rank, (_, sc) in enumerate(order):
            adapter, url, check_future = self._adapter(sc)
            if sc.source in _LOCAL_SOURCES and not sc.url:
                url = await self._start_local_exchange(sc)
            label = sc.label if sc.label not in names else f"{sc.label}-{rank}"
            names.add(label)
            if label != sc.label:
                sc = StreamConfig(sc.source, sc.symbols, sc.stream_types, sc.url, sc.priority, label)
            live_clock = check_future and self.config.max_future_secs is not None
            # Early samples are set aside only where exchange times run with ours: a replay of history as fast as it
            # goes moves its "clock" ahead by far more than `clock_outlier_ms` at every frame.
            outlier_ms = self.config.clock_outlier_ms if live_clock else None
            estimator = OffsetEstimator(
                self.config.offset_window, None if outlier_ms is None else outlier_ms * 1_000_000,
                self.config.clock_confirm_frames,
            )  # fmt: skip
            feed = Feed(sc, adapter, url, rank, SourceHealth(label), estimator, frozenset(sc.symbols), live_clock)
            self._feeds.append(feed)
            for symbol in sc.symbols:
                self._routes.setdefault(symbol, []).append(feed)
                self._active.setdefault(symbol, None)
                self._buffers.setdefault(symbol, TickRing(self.config.buffer_size, self.config.overflow_policy))
                self._dedup.setdefault(symbol, _Dedup(self.config.dedup_window))

    @staticmethod
    def _feed_ended(task: asyncio.Task[Any]) -> None:
        """A feed task that ended with an error (a bug, or a URL that can never work) says so at once: its symbols
        fail over to their other sources, and it does not reconnect."""
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "%s stopped by an error; its symbols fail over to their other sources", task.get_name(),
                exc_info=task.exception(),
            )  # fmt: skip

    def _raise_if_failed(self) -> None:
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _start_local_exchange(self, sc: StreamConfig) -> str:
        from gpt_trader.realtime.exchange import ExchangeConfig, LocalExchange

        r = self.config.replay
        exchange = LocalExchange(
            ExchangeConfig(
                feed="replay" if sc.source == DataSource.REPLAY else "simulated",
                rate=r.rate,
                ticks_per_bar=r.ticks_per_bar,
                batch=r.batch,
                timestamps=r.timestamps,
                quote_every=r.quote_every,
                start_on_subscribe=True,  # the tape starts when this pipeline subscribes: no first bar lost
            )
        )
        await exchange.start()
        self._exchanges.append(exchange)
        return exchange.url("alpaca")

    async def stop(self) -> None:
        """Disconnect, flush the bus writer, stop any embedded exchange. Open bars stay open (see `flush_bars`).

        The writer is not cancelled mid-publish: it finishes its flush, then the rest is published, retrying for up
        to `bus_drain_timeout_secs` while the bus is down or hung; whatever is left then is logged and counted."""
        if not self.started:
            return
        self._stop.set()
        flusher, self._flusher_task = self._flusher_task, None
        others = [t for t in self._tasks if t is not flusher]
        for task in others:
            task.cancel()
        for task in [*others, *self._backfills]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        deadline = time.monotonic() + self.config.bus_drain_timeout_secs  # the feeds are quiet: nothing more comes
        if flusher is not None:
            # Cancelled only past the deadline (a hung bus): `_flush` then puts its batch back for the report.
            try:
                await asyncio.wait_for(flusher, max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                self._bus_failed(TimeoutError(f"no reply within {self.config.bus_drain_timeout_secs}s"))
            except Exception:  # the writer handles its own errors: this is a bug, not an outage
                log.exception("bus writer failed")
        await self._drain(deadline)
        self._flush_metrics()
        for exchange in self._exchanges:
            await exchange.stop()
        self._exchanges.clear()
        self.started = False

    async def close(self) -> None:
        """Stop and release the bus."""
        await self.stop()
        await self.bus.close()

    async def __aenter__(self) -> RealtimePipeline:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- ingest -------------------------------------------------------------------------------------------------
    async def _on_frame(self, feed: Feed, raw: Any, recv_ns: int) -> None:
        adapter = feed.adapter
        try:
            frame: ParsedFrame = adapter.parse(raw, recv_ns) if adapter.name == "binance" else adapter.parse(raw)  # type: ignore[call-arg]
        except Exception as exc:
            frame = self._parser_failed(feed, raw, exc)
        self._on_parsed(feed, frame, recv_ns)
        if self._pending_count >= self.config.max_pending_ticks:
            # Backpressure instead of loss: wait for the writer; TCP then slows the exchange down.
            self._flushed.clear()
            await self._flushed.wait()

    def _parser_failed(self, feed: Feed, raw: Any, exc: Exception) -> ParsedFrame:
        """A parser that raised (a bug: parsers turn bad input into rejects) costs its frame only, as a
        `parser_error` dead letter; parsing is pure, so nothing was half-done. The first one per feed is logged with
        its traceback, the rest counted."""
        if feed.name not in self._parser_errors_logged:
            self._parser_errors_logged.add(feed.name)
            log.error("feed %s: the parser raised on a frame (dead-lettered as parser_error)", feed.name, exc_info=exc)
        return ParsedFrame(rejects=[Reject("parser_error", f"{type(exc).__name__}: {exc}", truncate_raw(raw))])

    def _parse_run(self, feed: Feed, parse_frames: Any, raws: Sequence[Any], start: int) -> TradeFrames | None:
        """The adapter's batched parse from `raws[start]`; None when it declines or raises (the frames then go one
        by one through `_on_frame`, where a raising parser costs only its frame)."""
        try:
            cols: TradeFrames | None = parse_frames(raws, start)
        except Exception as exc:
            if (feed.name, "batched") not in self._parser_errors_logged:
                self._parser_errors_logged.add((feed.name, "batched"))
                log.error("feed %s: the batched parse raised; its frames go one by one", feed.name, exc_info=exc)
            return None
        return cols

    def _on_parsed(self, feed: Feed, frame: ParsedFrame, recv_ns: int) -> None:
        """One parsed frame: dead letters, trades, quotes, control messages and provider bars."""
        health = feed.health
        health.messages += 1
        health.last_message_ns = recv_ns
        if frame.rejects:
            for r in frame.rejects:
                self._dead_letter(feed, r.reason, r.detail, r.raw, recv_ns)
        if frame.t_ts:
            self._ingest_trades(feed, frame, recv_ns)
        if frame.q_ts:
            self._ingest_quotes(feed, frame, recv_ns)
        if frame.control:
            for c in frame.control:
                if c.get("T") == "error" or c.get("status") in ("auth_failed", "error") or "code" in c:
                    self._dead_letter(feed, "provider_error", str(c), orjson.dumps(c).decode(), recv_ns)
        if frame.bars and self.config.publish_ticks:
            for b in frame.bars:
                self._queue_entry(f"provider_bars:{b.symbol}", {
                    "ts": str(b.ts_ns), "tf_secs": str(b.timeframe_secs), "open": repr(b.open), "high": repr(b.high),
                    "low": repr(b.low), "close": repr(b.close), "volume": repr(b.volume), "source": feed.name,
                })  # fmt: skip

    async def _on_frames(self, feed: Feed, raws: Sequence[Any], recv_ns: int) -> None:
        """Frames that were already waiting together in the connection, received at `recv_ns`: the same result as
        `_on_frame` for each in turn. Runs of trade-only frames (the adapter's `parse_trade_frames`: Alpaca and
        Polygon arrays, Binance `<sym>@trade` events) that can change nothing but their own bar windows go in one
        pass: through `_ingest_trade_run` when they are a few one-trade frames (plain Python beats numpy's
        per-call cost there), else through `_ingest_frame_run`; every other frame through `_on_frame`
        (`_on_parsed` when it was parsed for a run already)."""
        parse_frames = getattr(feed.adapter, "parse_trade_frames", None)
        if parse_frames is None or self.config.bar_time != "exchange":
            for raw in raws:
                await self._on_frame(feed, raw, recv_ns)
            return
        i, n = 0, len(raws)
        cols: TradeFrames | None = None  # the parsed trade frames from `i` on, kept while a run ends inside them
        while i < n:
            j = i
            if cols is not None and cols.start <= i < cols.end:
                cols = cols.from_frame(i)
            else:
                cols = self._parse_run(feed, parse_frames, raws, i)
            if cols is not None:
                nf = len(cols.counts)
                if nf < _TRADE_RUN_MAX and nf == len(cols.symbol):
                    j = self._ingest_trade_run(feed, cols, recv_ns)
                else:
                    j = self._ingest_frame_run(feed, cols, recv_ns)
            if j == i:
                if cols is not None and cols.start <= i < cols.end:
                    # Parsed already (a plain trade frame that does not qualify for the run): `_on_frame` without
                    # decoding it again.
                    self._on_parsed(feed, cols.parsed(i), recv_ns)
                    if self._pending_count >= self.config.max_pending_ticks:
                        self._flushed.clear()
                        await self._flushed.wait()
                else:
                    await self._on_frame(feed, raws[i], recv_ns)
                j = i + 1
            i = j
        if self._pending_count >= self.config.max_pending_ticks:
            self._flushed.clear()
            await self._flushed.wait()

    def _ingest_frame_run(self, feed: Feed, cols: Any, recv_ns: int) -> int:
        """Ingest the trade-only frames `cols` (an adapter's `parse_trade_frames`) from their first on, as one run
        with one set of array operations, and return the batch index where the run ends: the longest run whose
        trades are valid, new, for symbols this feed is active on (no handover catch-up, no open gap, an
        buffer that does not raise) and fall in the open window of every timeframe without moving the finality frontier
        (`_run_window`), so that frame-by-frame handling would emit no bar and dead-letter nothing before its end;
        except its last frame, which may reach into later windows (its bars are emitted after it, as frame by frame:
        `_add_crossing`).
        Per frame, in order, as `_ingest_trades`: the validation against the clock offset so far, the estimator
        (newest trade of the frame), the delay average and the latency samples; per symbol, in one go, what
        `_aggregate` does for each frame's trades of it: dedup, bars (`BarAggregator.add_terms` with each frame's
        volume and price * size sums, computed as `_aggregate` computes them), buffer (each frame's offset) and
        bus. Returns `cols.start` when the first frame does not qualify (the caller sends it to `_on_frame`)."""
        cfg = self.config
        start = cols.start
        counts: list[int] = cols.counts
        ts, px = np.asarray(cols.ts, dtype=np.int64), np.asarray(cols.price, dtype=np.float64)
        sz = np.asarray(cols.size, dtype=np.float64)
        syms: list[str] = cols.symbol
        nf = len(counts)
        single = len(syms) == nf  # one trade per frame (Binance)
        frame_of = np.arange(nf) if single else np.repeat(np.arange(nf), counts)
        numbered = (cols.codes, cols.names) if cols.codes is not None and cols.names is not None else None
        code, codes, starts, run_codes = _symbol_runs(syms, numbered)
        n_codes = len(code)
        limit = nf  # frames that qualify so far
        lo_w = np.zeros(n_codes, dtype=np.int64)
        hi_w = np.zeros(n_codes, dtype=np.int64)
        active, catchup, open_gaps = self._active, self._catchup, self._open_gaps
        for sym, c in code.items():
            window = None
            if (
                sym in feed.symbols
                and active.get(sym) is feed
                and sym not in catchup
                and sym not in open_gaps
                and self._buffers[sym].policy != "raise"
            ):
                window = self._run_window(sym)
            if window is None:
                limit = min(limit, int(frame_of[int(np.argmax(codes == c))]))
            else:
                lo_w[c], hi_w[c] = window
        if limit == 0:
            return start
        ok = (px > 0) & (px < cfg.max_price) & (sz >= 0) & (sz <= cfg.max_trade_size)  # NaN compares False: refused
        ok &= (ts > 0) & (ts >= lo_w[codes])
        if not ok.all():
            limit = min(limit, int(frame_of[int(np.argmin(ok))]))
            if limit == 0:
                return start
        # The first frame with a trade past the end of its open window (or where it would move the finality
        # frontier) still joins the run, as its last frame: frame by frame, its trades are added (to that window
        # and the next ones) before its bars are emitted, which `_advance` does after the run.
        beyond = ts >= hi_w[codes]
        crossing = nf  # the frame that crosses (none: `nf`)
        if beyond.any():
            crossing = int(frame_of[int(np.argmax(beyond))])
            limit = min(limit, crossing + 1)
        ids: list[Any] = cols.ids
        dedup = self._dedup
        m = sum(counts[:limit])
        # Every id new: not in its symbol's window, not repeated in the run. Grouped by symbol (in arrival order),
        # each symbol's ids go into its window's set at once (`_Dedup.add_new`, which tells whether any repeats).
        # What the run does not take in the end comes out again below; `_commit_frame_run` then records the rest
        # in the window's eviction order.
        order: npt.NDArray[np.intp] | None = None
        if n_codes == 1:
            by_symbol = [ids[:m]]
        else:
            order = np.argsort(codes[:m], kind="stable")
            by_symbol = _ids_by_symbol(ids, codes[:m], n_codes, starts, run_codes, order)
        added: list[tuple[set[Any], list[Any]]] = []
        recorded = True
        for sym, mine in zip(code, by_symbol, strict=True):
            if not mine:
                continue
            ids_window = dedup[sym]
            if ids_window.add_new(mine):
                added.append((ids_window.seen, mine))
                continue
            recorded = False
            break
        if not recorded:  # take them all out again, and find the first frame with a duplicate of its own symbol
            for seen, mine in added:
                seen.difference_update(mine)
            run: dict[str, set[Any]] = {}
            for i in range(m):
                s, x = syms[i], ids[i]
                batch = run.setdefault(s, set())
                if x in batch or x in dedup[s].seen:
                    limit = int(frame_of[i])
                    break
                batch.add(x)
        if limit == 0:
            return start
        # Per frame, in order: validation against the offset so far, then the estimator and the delay average.
        if single:
            ends = list(range(1, limit + 1))
            firsts = list(range(limit))
            newest = ts[:limit]
        else:
            ends = np.cumsum(counts[:limit]).tolist()
            firsts = [0, *ends[:-1]]
            newest = np.maximum.reduceat(ts[: ends[-1]], firsts)
        future_ns = int(cfg.max_future_secs * _NS) if feed.check_future and cfg.max_future_secs is not None else None
        health = feed.health
        offsets = feed.observe_clock_array(recv_ns, newest, future_ns)
        limit = len(offsets)  # up to the first frame whose newest trade is too far in the future
        taken = ends[limit - 1] if limit else 0
        if recorded and taken < m:  # the run stops short: its ids from there on are not in the window after all
            for i in range(taken, m):
                dedup[syms[i]].seen.discard(ids[i])  # each (symbol, id) was added by this run, once
        if taken < m:
            order = None  # sorted for more trades than the run takes
        if limit == 0:
            return start
        m = taken
        health.messages += limit
        health.last_message_ns = recv_ns
        crosses = limit == crossing + 1
        done_syms = self._commit_frame_run(
            feed, code, counts[:limit], offsets, ts[:m], px[:m], sz[:m], codes[:m], ids, recv_ns, crosses,
            recorded, order, by_symbol if order is not None else None,
        )  # fmt: skip
        if crosses:  # the symbols of the crossing frame emit their bars in the order it names them, as frame by frame
            done_syms = list(dict.fromkeys([*syms[firsts[limit - 1] : m], *done_syms]))
        for sym in done_syms:
            self._advance(sym, feed)
        done = self._now_ns()
        self.latency.add_many(np.full(limit, done - recv_ns, dtype=np.int64))
        self.exchange_latency.add_many(done - (newest[:limit] + offsets))
        return start + limit

    def _commit_frame_run(
        self,
        feed: Feed,
        code: dict[str, int],
        counts: list[int],
        offsets: npt.NDArray[np.int64],
        ts: npt.NDArray[np.int64],
        px: npt.NDArray[np.float64],
        sz: npt.NDArray[np.float64],
        codes: npt.NDArray[np.intp],
        ids: list[Any],
        recv_ns: int,
        crosses: bool = False,
        recorded: bool = False,
        order: npt.NDArray[np.intp] | None = None,
        by_symbol: list[list[Any]] | None = None,
    ) -> list[str]:
        """The trades of a run checked by `_ingest_frame_run`, per symbol: `_aggregate` of each frame's trades of
        it, in one go (see there). With `crosses`, the last frame's trades may reach past the open window
        (`_add_crossing`); with `recorded`, their ids are in the dedup windows' sets already (to be recorded in
        their eviction order); `order` and `by_symbol` are the stable sort by symbol and each symbol's ids in arrival
        order (by symbol code), when the caller has them. Returns the symbols that had trades."""
        nf = len(counts)
        n_codes = len(code)
        single = len(ts) == nf  # one trade per frame (Binance): each trade is its frame, and its own group
        frame_of = np.arange(nf) if single else np.repeat(np.arange(nf), counts)
        corrected_by = offsets if single else np.repeat(offsets, counts)
        if n_codes > 1:
            # Group by symbol once: a stable sort by symbol code keeps each symbol's trades in arrival order.
            if order is None or by_symbol is None:
                order = np.argsort(codes, kind="stable")
                ol = order.tolist()
                ids = list(operator.itemgetter(*ol)(ids)) if len(ol) > 1 else [ids[ol[0]]]
                by_symbol = None
            ts, px, sz = ts[order], px[order], sz[order]
            frame_of, corrected_by = frame_of[order], corrected_by[order]
            sym_ends = np.cumsum(np.bincount(codes, minlength=n_codes)).tolist()
            group_key = codes[order] * nf + frame_of
        else:
            ids = ids[: len(ts)]
            by_symbol = None
            sym_ends = [len(ts)]
            group_key = frame_of
        # (frame, symbol) groups: what `_aggregate` gets per frame; their sums as it computes them.
        g_first = list(range(nf)) if single else [0, *(np.flatnonzero(np.diff(group_key)) + 1).tolist()]
        g_frame = frame_of[g_first].tolist() if crosses else []
        g_ends = [*g_first[1:], len(ts)]
        pxsz = px * sz
        # Every group below `_SMALL` (one-trade frames, say): each trade is its own term, so a symbol's terms are
        # its trades in order, without a loop over its groups.
        all_small = single or int(np.diff(g_first, append=len(ts)).max()) < _SMALL
        vols = [] if all_small else np.add.reduceat(sz, g_first).tolist()
        pvs = [] if all_small else np.add.reduceat(pxsz, g_first).tolist()
        corrected = ts + corrected_by
        name = feed.name
        publish = self.config.publish_ticks
        g = 0
        lo = 0
        done: list[str] = []
        for c, (sym, hi) in enumerate(zip(code, sym_ends, strict=True)):
            n = hi - lo
            if n == 0:  # only in frames after the end of the run
                continue
            done.append(sym)
            s_ts, s_px, s_sz = ts[lo:hi], px[lo:hi], sz[lo:hi]
            s_ids = by_symbol[c] if by_symbol is not None else ids[lo:hi]
            if recorded:
                self._dedup[sym].record_added(s_ids)
            else:
                self._dedup[sym].add_fresh(s_ids)
            # Per group in order: one term of each sum (`add_run`), or one per trade below `_SMALL` (`add`).
            v_terms: list[float] = []
            pv_terms: list[float] = []
            g0 = g
            terms: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None
            if all_small:  # the terms as arrays (`add_terms` sums them in C), as lists where the run crosses
                terms = (s_sz, pxsz[lo:hi])
                g = bisect.bisect_left(g_first, hi, g)
            while g < len(g_first) and g_first[g] < hi:
                a, b = g_first[g], g_ends[g]
                if b - a >= _SMALL:
                    v_terms.append(vols[g])
                    pv_terms.append(pvs[g])
                else:
                    v_terms.extend(sz[a:b].tolist())
                    pv_terms.extend(pxsz[a:b].tolist())
                g += 1
            i_min = int(s_ts.argmin())  # first of the earliest: the open
            t_max = int(s_ts.max())
            i_close = n - 1 - int(s_ts[::-1].argmax())  # last of the latest
            hi_px, lo_px = float(s_px.max()), float(s_px.min())
            t_min, p_open, p_close = int(s_ts[i_min]), float(s_px[i_min]), float(s_px[i_close])
            summary = (t_min, p_open, t_max, p_close, hi_px, lo_px)
            if crosses and g_frame[g - 1] == nf - 1:  # the symbol has trades in the crossing frame
                if terms is not None:
                    v_terms, pv_terms = terms[0].tolist(), terms[1].tolist()
                k = g_first[g - 1] - lo  # where they start
                prev = len(v_terms) - (n - k if n - k < _SMALL else 1)  # the terms of the frames before it
                self._add_crossing(sym, s_ts, s_px, s_sz, pxsz[lo:hi], k, v_terms, pv_terms, prev, summary, name)
            else:
                v_all, pv_all = terms if terms is not None else (v_terms, pv_terms)
                for agg in self.aggregators:
                    agg.add_terms(sym, *summary, v_all, pv_all, n, name)
            self.ticks_accepted += n
            feed.health.ticks += n
            key = (name, sym)
            self._tick_counts[key] = self._tick_counts.get(key, 0) + n
            if t_max >= self._last_active_ts.get(sym, 0):
                self._last_active_ts[sym] = t_max
            last_px = float(s_px[-1])
            feed.health.last_price[sym] = last_px
            self._last_price[sym] = last_px
            self._last_trade_wall[sym] = recv_ns
            if len(self._routes[sym]) > 1:
                self._recent(sym).extend(zip((s_ts // 1_000_000).tolist(), s_px.tolist(), s_sz.tolist(), strict=True))
            bid, ask, bsz, asz = self._quote_state.get(sym, _NO_QUOTE)
            ring = self._buffers[sym]
            before = ring.counters.overwritten + ring.counters.dropped
            # One write, unless it outgrows the ring (or a non-overwriting ring's room): then per frame, as the
            # frames' writes count and keep what they store.
            whole = n <= ring.capacity and (ring.policy == "overwrite" or len(ring) + n <= ring.capacity)
            parts = [(lo, hi)] if whole else list(zip(g_first[g0:g], g_ends[g0:g], strict=True))
            for a, b in parts:
                ring.write(
                    b - a,
                    {"ts_event": ts[a:b], "ts_corrected": corrected[a:b], "ts_init": recv_ns, "price": px[a:b],
                     "size": sz[a:b], "bid": bid, "ask": ask, "bid_size": bsz, "ask_size": asz, "kind": KIND_TRADE},
                )  # fmt: skip
            lost = ring.counters.overwritten + ring.counters.dropped - before
            if lost:
                self._overflow(ring.policy).inc(lost)
            if publish:
                self._pending_ticks.setdefault(sym, []).append((s_ts, s_px, s_sz, recv_ns, name))
                self._pending_count += n
            lo = hi
        return done

    def _add_crossing(
        self,
        symbol: str,
        ts: npt.NDArray[np.int64],
        px: npt.NDArray[np.float64],
        sz: npt.NDArray[np.float64],
        pxsz: npt.NDArray[np.float64],
        k: int,
        v_terms: list[float],
        pv_terms: list[float],
        prev: int,
        summary: tuple[int, float, int, float, float, float],
        name: str,
    ) -> None:
        """The bars of one symbol's trades of a run whose last frame (its trades from `k` on) may reach past the
        open window: per timeframe and window, the terms frame-by-frame handling adds, in its order. `v_terms` and
        `pv_terms` are the run's terms as `_commit_frame_run` computed them for one window (`summary`: its open,
        close, high and low), the first `prev` of them the earlier frames' (all in the open window). Where the last
        frame does cross, those come first, then its own trades add one sum per window with `_SMALL` or more of them
        (`_aggregate`: `add` split by window), one term per trade below that (`add`'s loop, `add_one`)."""
        m = len(ts) - k
        n = len(ts)
        t_min, t_max = summary[0], summary[2]
        v_prev, pv_prev = v_terms[:prev], pv_terms[:prev]
        for agg in self.aggregators:
            width = agg.width
            if t_min - t_min % width == t_max - t_max % width:  # one window of this timeframe: no crossing here
                agg.add_terms(symbol, *summary, v_terms, pv_terms, n, name)
                continue
            starts = ts - ts % width
            windows = np.unique(starts[k:]).tolist()
            if k and int(starts[0]) not in windows:
                windows.insert(0, int(starts[0]))  # earlier than the last frame's: the open window
            for w in windows:
                idx = np.flatnonzero(starts == w)
                w_v: list[float] = []
                w_pv: list[float] = []
                if k and w == int(starts[0]):
                    w_v += v_prev
                    w_pv += pv_prev
                tail = idx[idx >= k]
                if len(tail):
                    if m < _SMALL:
                        w_v.extend(sz[tail].tolist())
                        w_pv.extend(pxsz[tail].tolist())
                    else:  # the window's share of the frame's trades
                        w_v.append(volume_sum(sz[tail]))
                        w_pv.append(pv_sum(px[tail], sz[tail]))
                w_ts, w_px = ts[idx], px[idx]
                w_n = len(idx)
                i_min = int(w_ts.argmin())  # first of the earliest: the open
                i_close = w_n - 1 - int(w_ts[::-1].argmax())  # last of the latest
                agg.add_terms(
                    symbol, int(w_ts[i_min]), float(w_px[i_min]), int(w_ts[i_close]), float(w_px[i_close]),
                    float(w_px.max()), float(w_px.min()), w_v, w_pv, w_n, name,
                )  # fmt: skip

    def _ingest_trade_run(self, feed: Feed, cols: TradeFrames, recv_ns: int) -> int:
        """Ingest the one-trade frames `cols` from their first on as one run, and return the batch index where it
        ends: the longest run whose trades are valid, new, for a symbol this feed is active on (no handover catch-up,
        no open gap, a buffer that does not raise) and fall in the open window of every timeframe without moving the
        finality frontier, so that per-frame processing would emit no bar and dead-letter nothing before the run's
        end. Per frame, in order, exactly as `_ingest_one`: the validation against the clock offset so far, the
        offset estimator and the delay average; per symbol, the bars (`BarAggregator.add_terms`, a term per trade:
        `add_one`'s arithmetic in order), dedup, buffer and bus in one go. Returns `cols.start` when the first frame
        does not qualify (the caller sends it through `_on_parsed`)."""
        cfg = self.config
        max_price, max_size = cfg.max_price, cfg.max_trade_size
        symbols = feed.symbols
        active, catchup, open_gaps, dedup = self._active, self._catchup, self._open_gaps, self._dedup
        buffers = self._buffers
        syms, ts, px, sz, ids = cols.symbol, _as_list(cols.ts), _as_list(cols.price), _as_list(cols.size), cols.ids
        # Per symbol: its trades' columns and batch indices, the window bounds, its dedup window's ids and the ids
        # taken so far.
        runs: dict[str, tuple[list[int], list[float], list[float], list[Any], list[int], int, int, set[Any], set[Any]]]
        runs = {}
        k = 0
        for k, (sym, t, p, z, tid) in enumerate(zip(syms, ts, px, sz, ids, strict=True)):
            if sym not in symbols or not 0 < p < max_price or not 0 <= z <= max_size or t <= 0:  # NaN refused
                break
            run = runs.get(sym)
            if run is None:
                # A buffer that raises when full must do so at the frame that overflows it, as frame by frame.
                if active.get(sym) is not feed or sym in catchup or sym in open_gaps or buffers[sym].policy == "raise":
                    break
                window = self._run_window(sym)
                seen_before = dedup[sym].seen
                if window is None or not window[0] <= t < window[1] or tid in seen_before:
                    break
                run = runs[sym] = ([], [], [], [], [], window[0], window[1], seen_before, set())
            elif not run[5] <= t < run[6] or tid in run[8] or tid in run[7]:
                break
            run[0].append(t)
            run[1].append(p)
            run[2].append(z)
            run[3].append(tid)
            run[4].append(k)
            run[8].add(tid)
        else:
            k = len(syms)
        # Then, frame by frame in order, the check against the source's clock as the frames before estimate it,
        # and the estimator and the delay average; the run ends at the first frame too far in the future.
        future_ns = int(cfg.max_future_secs * _NS) if feed.check_future and cfg.max_future_secs is not None else None
        offsets = feed.observe_clock_run(recv_ns, ts[:k], future_ns)
        taken = len(offsets)
        if not taken:
            return cols.start
        health = feed.health
        health.messages += taken
        health.last_message_ns = recv_ns
        name = feed.name
        done_syms: list[str] = []
        for sym, (ts_l, px_l, sz_l, id_l, idx, *_) in runs.items():
            if taken < k:  # the trades from `taken` on are not in the run after all
                m = bisect.bisect_left(idx, taken)
                if not m:
                    continue
                ts_l, px_l, sz_l, id_l, idx = ts_l[:m], px_l[:m], sz_l[:m], id_l[:m], idx[:m]
            done_syms.append(sym)
            self._commit_run(feed, name, sym, ts_l, px_l, sz_l, id_l, [offsets[i] for i in idx], recv_ns)
        for sym in done_syms:
            self._advance(sym, feed)
        done = self._now_ns()
        self.latency.add_many([done - recv_ns] * taken)
        self.exchange_latency.add_many([done - t - offset for t, offset in zip(ts, offsets, strict=False)])
        return cols.start + taken

    def _recent(self, symbol: str) -> deque[tuple[int, float, float]]:
        """The active feed's latest trades of `symbol` as (millisecond, price, size): what `_after_last` matches a
        new active feed's trades against after a handover (kept only where a handover can happen)."""
        recent = self._recent_active.get(symbol)
        if recent is None:
            recent = self._recent_active[symbol] = deque(maxlen=4096)
        return recent

    def _close_gaps(self, symbol: str, first: int | None, recv_ns: int, offset: int) -> None:
        """`symbol`'s open gaps end at `first`, the exchange time of its first trade since (in the bars' time:
        `bar_time: corrected` adds the feed's `offset`); None (only trades ahead of the source's clock came,
        `_aggregate`'s `early`) leaves them open for the next trades: a bad print must not stretch a gap into the
        future."""
        if first is None or symbol not in self._open_gaps:
            return
        if self.config.bar_time == "corrected":
            first += offset
        for agg, gap in zip(self.aggregators, self._open_gaps.pop(symbol), strict=True):
            agg.close_gap(gap, first, recv_ns)

    def _hold_newest(self, symbol: str, tops: list[int], ts: Any, bound: int | None, offset: int) -> int | None:
        """After trades of `symbol` with times `ts` were aggregated: each aggregator's newest trade time as before
        (`tops`) or the newest of these trades not past `bound` (in bar time), and that trade's exchange time (None
        when all are past it)."""
        newest = _newest(ts, bound)
        shift = offset if newest is not None and self.config.bar_time == "corrected" else 0
        for agg, top in zip(self.aggregators, tops, strict=True):
            agg.hold_newest(symbol, top if newest is None else max(top, newest + shift))
        return newest

    def _run_window(self, symbol: str) -> tuple[int, int] | None:
        """`[lo, hi)`: where `symbol`'s trades fall in the open window of every timeframe without moving any
        finality frontier (see `BarAggregator.window_bounds`); None when there is no such window yet."""
        lo, hi = 0, 2**63
        for agg in self.aggregators:
            b = agg.window_bounds(symbol)
            if b is None or not b[2]:
                return None
            lo, hi = max(lo, b[0]), min(hi, b[1])
        return (lo, hi) if lo < hi else None

    def _commit_run(
        self,
        feed: Feed,
        name: str,
        symbol: str,
        ts: list[int],
        px: list[float],
        sz: list[float],
        ids: list[Any],
        offsets: list[int],
        recv_ns: int,
    ) -> None:
        """One symbol's trades of a run checked by `_ingest_trade_run`: `_route_trades` + `_aggregate_few` for
        each, in one go."""
        n = len(ts)
        feed.health.last_price[symbol] = px[-1]
        self._dedup[symbol].add_fresh(ids)  # all new and distinct: checked by the run
        # The trades lie in the open window of every timeframe: one summary serves them all, and `add_terms` with a
        # term per trade adds each sum in `add_one`'s order (first of the earliest opens, last of the latest closes).
        if n == 1:
            t_max, p0 = ts[0], px[0]
            summary = (t_max, p0, t_max, p0, p0, p0)
        else:
            t_min, t_max = min(ts), max(ts)
            i_close = n - 1 - ts[::-1].index(t_max)
            summary = (t_min, px[ts.index(t_min)], t_max, px[i_close], max(px), min(px))
        pvs = [p * z for p, z in zip(px, sz, strict=True)]
        for agg in self.aggregators:
            agg.add_terms(symbol, *summary, sz, pvs, n, name)
        self.ticks_accepted += n
        feed.health.ticks += n
        key = (name, symbol)
        self._tick_counts[key] = self._tick_counts.get(key, 0) + n
        if t_max >= self._last_active_ts.get(symbol, 0):
            self._last_active_ts[symbol] = t_max
        self._last_price[symbol] = px[-1]
        self._last_trade_wall[symbol] = recv_ns
        if len(self._routes[symbol]) > 1:
            self._recent(symbol).extend(zip([t // 1_000_000 for t in ts], px, sz, strict=True))
        bid, ask, bsz, asz = self._quote_state.get(symbol, _NO_QUOTE)
        ring = self._buffers[symbol]
        before = ring.counters.overwritten + ring.counters.dropped
        corrected = [t + o for t, o in zip(ts, offsets, strict=True)]
        ring.write_rows(ts, recv_ns, corrected, px, sz, bid, ask, bsz, asz, KIND_TRADE)
        lost = ring.counters.overwritten + ring.counters.dropped - before
        if lost:
            self._overflow(ring.policy).inc(lost)
        if self.config.publish_ticks:
            self._pending_ticks.setdefault(symbol, []).append((ts, px, sz, recv_ns, name))
            self._pending_count += n

    def _overflow(self, policy: str) -> Any:
        """The buffer-overflow counter of `policy`: `labels()` is a lookup under a lock, and an overwriting ring
        that is full loses events on every write."""
        counter = self._overflow_counters.get(policy)
        if counter is None:
            counter = self._overflow_counters[policy] = self.metrics.overflow.labels(policy)
        return counter

    def _dead_letter(self, feed: Feed, reason: str, detail: str, raw: str, wall_ns: int) -> None:
        feed.health.rejects += 1
        self.metrics.rejects.labels(feed.name, reason).inc()
        letter = self.dead_letters.add(feed.name, reason, detail, raw, wall_ns)
        self._queue_entry("deadletter", letter.to_fields())

    def _validate(
        self,
        feed: Feed,
        frame: ParsedFrame,
        recv_ns: int,
        ts: npt.NDArray[np.int64],
        px: npt.NDArray[np.float64],
        sz: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.bool_] | None:
        """Mask of invalid trades (None = all valid), from the frame's columns as arrays; invalid ones are
        dead-lettered with the reason."""
        cfg = self.config
        with np.errstate(invalid="ignore"):
            bad_price = ~((px > 0) & (px < cfg.max_price))  # NaN compares False: refused
            bad_size = ~((sz >= 0) & (sz <= cfg.max_trade_size))
        bad = bad_price | bad_size
        bad_ts = ts <= 0
        if feed.check_future and cfg.max_future_secs is not None:
            # Before the first clock sample the source's clock is taken to be ours: a first trade stamped far ahead
            # would otherwise seed the estimator and move the bars' frontier with it (and every real trade is late).
            now_src = recv_ns - (feed.estimator.offset_ns or 0)
            bad_ts |= ts > now_src + int(cfg.max_future_secs * _NS)
        bad |= bad_ts
        symbols = feed.symbols
        syms = frame.t_symbol
        first = syms[0]
        if syms.count(first) == len(syms):
            bad_sym = np.full(len(syms), first not in symbols) if first not in symbols else None
        elif symbols.issuperset(syms):
            bad_sym = None
        else:
            bad_sym = np.fromiter((s not in symbols for s in syms), dtype=bool, count=len(syms))
        if bad_sym is not None:
            bad |= bad_sym
        if not bad.any():
            return None
        for i in np.flatnonzero(bad).tolist():
            reason = (
                "unknown_symbol"
                if bad_sym is not None and bad_sym[i]
                else "bad_price"
                if bad_price[i]
                else "bad_size"
                if bad_size[i]
                else "bad_timestamp"
            )
            self._dead_letter(
                feed, reason, f"{syms[i]!r} price={px[i]!r} size={sz[i]!r} ts={int(ts[i])}",
                tick_raw(syms[i], int(ts[i]), float(px[i]), float(sz[i]), frame.t_id[i]), recv_ns,
            )  # fmt: skip
        return bad

    def _validate_small(self, feed: Feed, frame: ParsedFrame, recv_ns: int) -> list[int] | None:
        """Indices of valid trades (None = all valid) for a few trades (Binance sends one per frame): plain Python
        beats numpy's call overhead. Invalid ones are dead-lettered with the reason."""
        cfg = self.config
        max_price, max_size = cfg.max_price, cfg.max_trade_size
        limit = None
        if feed.check_future and cfg.max_future_secs is not None:  # no sample yet: the source's clock is ours
            limit = recv_ns - (feed.estimator.offset_ns or 0) + int(cfg.max_future_secs * _NS)
        keep: list[int] = []
        bad = False
        for i, (sym, t, p, z) in enumerate(zip(frame.t_symbol, frame.t_ts, frame.t_price, frame.t_size, strict=True)):
            reason = (
                "unknown_symbol" if sym not in feed.symbols
                else "bad_price" if not 0 < p < max_price  # NaN fails every comparison: refused
                else "bad_size" if not 0 <= z <= max_size
                else "bad_timestamp" if t <= 0 or (limit is not None and t > limit)
                else None
            )  # fmt: skip
            if reason is None:
                keep.append(i)
                continue
            bad = True
            self._dead_letter(
                feed, reason, f"{sym!r} price={p!r} size={z!r} ts={t}", tick_raw(sym, t, p, z, frame.t_id[i]), recv_ns
            )
        return keep if bad else None

    def _ingest_trades(self, feed: Feed, frame: ParsedFrame, recv_ns: int) -> None:
        if len(frame.t_ts) == 1:
            self._ingest_one(feed, frame, recv_ns)
            return
        if len(frame.t_ts) < _SMALL:
            self._ingest_few(feed, frame, recv_ns)
            return
        # Columns as arrays once per frame; everything downstream works on these (or their per-symbol slices).
        ts_arr = frame.t_ts_array
        ts = ts_arr if ts_arr is not None and len(ts_arr) == len(frame.t_ts) else np.array(frame.t_ts, np.int64)
        px = np.array(frame.t_price, dtype=np.float64)
        sz = np.array(frame.t_size, dtype=np.float64)
        syms, ids = frame.t_symbol, frame.t_id
        bad = self._validate(feed, frame, recv_ns, ts, px, sz)
        if bad is not None:
            keep = np.flatnonzero(~bad)
            if not len(keep):
                return
            ts, px, sz = ts[keep], px[keep], sz[keep]
            keep_list = keep.tolist()
            syms = [syms[i] for i in keep_list]
            ids = [ids[i] for i in keep_list]
        est = feed.estimator
        newest = int(ts.max())
        offset, early = feed.observe_clock(recv_ns, newest)
        first = syms[0]
        n = len(syms)
        if syms.count(first) == n:
            self._route_trades(feed, first, ts, px, sz, ids, recv_ns, offset, early)
        else:
            # Group by symbol once: a stable sort by symbol code keeps each symbol's trades in arrival order.
            code = {sym: k for k, sym in enumerate(dict.fromkeys(syms))}
            codes = np.fromiter(map(code.__getitem__, syms), dtype=np.intp, count=n)
            order = np.argsort(codes, kind="stable")
            ends = np.cumsum(np.bincount(codes, minlength=len(code))).tolist()
            ts, px, sz = ts[order], px[order], sz[order]
            ids = list(operator.itemgetter(*order.tolist())(ids))
            lo = 0
            for sym, hi in zip(code, ends, strict=True):
                self._route_trades(feed, sym, ts[lo:hi], px[lo:hi], sz[lo:hi], ids[lo:hi], recv_ns, offset, early)
                lo = hi
        done = self._now_ns()
        self.latency.add(done - recv_ns)
        if est.offset_ns is not None and early is None:  # a bad print's time would make it negative
            self.exchange_latency.add(done - (newest + est.offset_ns))

    def _ingest_one(self, feed: Feed, frame: ParsedFrame, recv_ns: int) -> None:
        """`_ingest_trades` for a frame of one trade (Binance): `_validate_small` and `_ingest_few`, unrolled."""
        sym, t, p, z = frame.t_symbol[0], frame.t_ts[0], frame.t_price[0], frame.t_size[0]
        cfg = self.config
        est = feed.estimator
        offset = est.offset_ns
        reason = (
            "unknown_symbol" if sym not in feed.symbols
            else "bad_price" if not 0 < p < cfg.max_price  # NaN fails every comparison: refused
            else "bad_size" if not 0 <= z <= cfg.max_trade_size
            else "bad_timestamp" if t <= 0 or (
                feed.check_future and cfg.max_future_secs is not None  # no sample yet: the source's clock is ours
                and t > recv_ns - (offset or 0) + int(cfg.max_future_secs * _NS)
            )
            else None
        )  # fmt: skip
        if reason is not None:
            self._dead_letter(
                feed, reason, f"{sym!r} price={p!r} size={z!r} ts={t}", tick_raw(sym, t, p, z, frame.t_id[0]), recv_ns
            )
            return
        offset, early = feed.observe_clock(recv_ns, t)
        self._route_trades(feed, sym, [t], [p], [z], [frame.t_id[0]], recv_ns, offset, early)
        done = self._now_ns()
        self.latency.add(done - recv_ns)
        if est.offset_ns is not None and early is None:  # a bad print's time would make it negative
            self.exchange_latency.add(done - (t + est.offset_ns))

    def _ingest_few(self, feed: Feed, frame: ParsedFrame, recv_ns: int) -> None:
        """`_ingest_trades` for fewer than `_SMALL` trades, on lists."""
        keep = self._validate_small(feed, frame, recv_ns)
        syms, ts, px, sz, ids = frame.t_symbol, frame.t_ts, frame.t_price, frame.t_size, frame.t_id
        if keep is not None:
            if not keep:
                return
            syms = [syms[i] for i in keep]
            ts = [ts[i] for i in keep]
            px = [px[i] for i in keep]
            sz = [sz[i] for i in keep]
            ids = [ids[i] for i in keep]
        est = feed.estimator
        newest = max(ts)
        offset, early = feed.observe_clock(recv_ns, newest)
        first = syms[0]
        if len(syms) == 1 or syms.count(first) == len(syms):
            self._route_trades(feed, first, ts, px, sz, ids, recv_ns, offset, early)
        else:
            for symbol in dict.fromkeys(syms):
                idx = [i for i, s in enumerate(syms) if s == symbol]
                self._route_trades(
                    feed, symbol, [ts[i] for i in idx], [px[i] for i in idx], [sz[i] for i in idx],
                    [ids[i] for i in idx], recv_ns, offset, early,
                )  # fmt: skip
        done = self._now_ns()
        self.latency.add(done - recv_ns)
        if est.offset_ns is not None and early is None:  # a bad print's time would make it negative
            self.exchange_latency.add(done - (newest + est.offset_ns))

    def _route_trades(
        self,
        feed: Feed,
        symbol: str,
        ts: Any,
        px: Any,
        sz: Any,
        ids: list[Any],
        recv_ns: int,
        offset: int,
        early: int | None = None,
    ) -> None:
        """One symbol's valid trades of a frame (lists, or numpy arrays for `_SMALL` or more) to bars or shadow;
        `early`: where the source's clock stood when the frame's clock sample was set aside as stamped ahead of it
        (`_aggregate`)."""
        feed.health.last_price[symbol] = float(px[-1])
        active = self._active.get(symbol)
        if active is None and feed.healthy and self._routes[symbol][0] is feed:
            self._switch(symbol, feed)  # first data on the primary
            active = feed
        if active is not feed:
            if active is None and feed.healthy:
                self._reroute(symbol)
                active = self._active.get(symbol)
            if active is not feed:
                shadow = feed.shadow(symbol, self.config.shadow_ticks)
                if len(shadow.ticks) + len(ts) > (shadow.ticks.maxlen or 0):
                    shadow.overflowed = True
                shadow.ticks.extend(zip(_as_list(ts), _as_list(px), _as_list(sz), ids, strict=True))
                return
        last = self._catchup.get(symbol)
        if last is not None:
            newest = _newest(ts, early)
            if newest is not None and newest // 1_000_000 > last // 1_000_000:
                del self._catchup[symbol]  # past the handover point: everything from here on is new
            ticks = self._after_last(
                symbol, feed, list(zip(_as_list(ts), _as_list(px), _as_list(sz), ids, strict=True)), last
            )
            if not ticks:
                return
            ts, px, sz, ids = (list(c) for c in zip(*ticks, strict=True))
        self._aggregate(feed, symbol, ts, px, sz, ids, recv_ns, offset, early)

    def _aggregate(
        self,
        feed: Feed,
        symbol: str,
        ts: Any,
        px: Any,
        sz: Any,
        ids: list[Any],
        recv_ns: int,
        offset: int,
        early: int | None = None,
    ) -> None:
        """Dedup, then bars, live buffer and bus for one symbol's trades (lists, or numpy arrays). With `early` (the
        source's clock, exchange ns, where a frame's clock sample was set aside as stamped ahead of it and not
        confirmed by the frames after it; or a standby's trades taken over), trades stamped past it go into their
        windows but move neither the bars' frontier nor the last trade counted: a bad print must not close windows
        whose trades are still to come, nor make a handover skip them."""
        fresh = self._dedup[symbol].fresh(ids)
        if fresh is not None:
            dup = sorted(set(range(len(ids))) - set(fresh))
            for i in dup:
                self._dead_letter(
                    feed, "duplicate", f"trade id {ids[i]!r}",
                    tick_raw(symbol, int(ts[i]), float(px[i]), float(sz[i]), ids[i]), recv_ns,
                )  # fmt: skip
            if not fresh:
                return
            if isinstance(ts, np.ndarray):
                ts, px, sz = ts[fresh], px[fresh], sz[fresh]
            else:
                ts, px, sz = [ts[i] for i in fresh], [px[i] for i in fresh], [sz[i] for i in fresh]
            ids = [ids[i] for i in fresh]
        n = len(ts)
        if n < _SMALL:  # lists: the aggregator's scalar path and the ring's row writes are cheaper than numpy here
            self._aggregate_few(feed, symbol, _as_list(ts), _as_list(px), _as_list(sz), ids, recv_ns, offset, early)
            return
        if not isinstance(ts, np.ndarray):
            ts = np.array(ts, dtype=np.int64)
            px = np.array(px, dtype=np.float64)
            sz = np.array(sz, dtype=np.float64)
        i_min = int(ts.argmin())  # first of the earliest: the open
        i_max = int(ts.argmax())  # first of the latest
        t_min, t_max = int(ts[i_min]), int(ts[i_max])
        i_close = n - 1 if int(ts[-1]) == t_max else n - 1 - int(ts[::-1].argmax())  # last of the latest
        self._close_gaps(symbol, t_min if early is None else _oldest(ts, early), recv_ns, offset)
        if self.config.bar_time == "exchange":
            bar_ts = ts
            b_min, b_max = t_min, t_max
        else:
            bar_ts = ts + offset
            b_min, b_max = t_min + offset, t_max + offset
        name = feed.name
        stats: tuple[float, float, float, float] | None = None
        late_all: set[int] | None = None
        tops = [agg.newest(symbol) for agg in self.aggregators] if early is not None else None
        for agg in self.aggregators:
            width = agg.width
            if b_min - b_min % width == b_max - b_max % width:
                # One window of this timeframe: aggregate the summary, computed once for every such timeframe.
                if stats is None:
                    stats = (float(px.max()), float(px.min()), volume_sum(sz), pv_sum(px, sz))
                hi, lo, vol, pv = stats
                ok = agg.add_run(symbol, b_min, float(px[i_min]), b_max, float(px[i_close]), hi, lo, vol, pv, n, name)
                late: Sequence[int] | None = None if ok else range(n)
            else:
                late = agg.add(symbol, bar_ts, px, sz, name)
            if late:
                if late_all is None:
                    late_all = set(late)
                else:
                    late_all.update(late)
        counted: int | None = None  # the newest trade that moves the frontier (None: the newest of all)
        if tops is not None:
            counted = self._hold_newest(symbol, tops, ts, early, offset)
        if late_all:
            # Late for one timeframe only is still counted in the others; dead-letter it once, with the reason.
            for i in sorted(late_all):
                t = int(ts[i])
                self._dead_letter(
                    feed, "late", f"ts {t} behind the watermark",
                    tick_raw(symbol, t, float(px[i]), float(sz[i]), ids[i]), recv_ns,
                )  # fmt: skip
        accepted = n - (len(late_all) if late_all else 0)
        self.ticks_accepted += accepted
        feed.health.ticks += accepted
        key = (name, symbol)
        self._tick_counts[key] = self._tick_counts.get(key, 0) + accepted
        last_counted = t_max if tops is None else counted
        if last_counted is not None and last_counted >= self._last_active_ts.get(symbol, 0):
            self._last_active_ts[symbol] = last_counted
        self._last_price[symbol] = float(px[-1])
        self._last_trade_wall[symbol] = recv_ns
        if len(self._routes[symbol]) > 1:  # remembered only where a handover can happen
            self._recent(symbol).extend(zip((ts // 1_000_000).tolist(), px.tolist(), sz.tolist(), strict=True))
        bid, ask, bsz, asz = self._quote_state.get(symbol, _NO_QUOTE)
        ring = self._buffers[symbol]
        before = ring.counters.overwritten + ring.counters.dropped
        ring.write(
            n,
            {"ts_event": ts, "ts_corrected": ts + offset if offset else ts, "ts_init": recv_ns,
             "price": px, "size": sz, "bid": bid, "ask": ask, "bid_size": bsz, "ask_size": asz, "kind": KIND_TRADE},
        )  # fmt: skip
        lost = ring.counters.overwritten + ring.counters.dropped - before
        if lost:
            self._overflow(ring.policy).inc(lost)
        if self.config.publish_ticks:
            self._pending_ticks.setdefault(symbol, []).append((bar_ts, px, sz, recv_ns, name))
            self._pending_count += n
        self._advance(symbol, feed)

    def _aggregate_few(
        self,
        feed: Feed,
        symbol: str,
        ts: list[int],
        px: list[float],
        sz: list[float],
        ids: list[Any],
        recv_ns: int,
        offset: int,
        early: int | None = None,
    ) -> None:
        """`_aggregate` after dedup for fewer than `_SMALL` trades, on lists (scalar stores beat numpy calls)."""
        if symbol in self._open_gaps:
            self._close_gaps(symbol, min(ts) if early is None else _oldest(ts, early), recv_ns, offset)
        bar_ts = ts if self.config.bar_time == "exchange" else [t + offset for t in ts]
        n = len(ts)
        name = feed.name
        late_all: set[int] | None = None
        tops = [agg.newest(symbol) for agg in self.aggregators] if early is not None else None
        if n == 1:
            t0, p0, s0 = bar_ts[0], float(px[0]), float(sz[0])
            for agg in self.aggregators:
                if not agg.add_one(symbol, t0, p0, s0, name):
                    late_all = {0}
        else:
            for agg in self.aggregators:
                late = agg.add(symbol, bar_ts, px, sz, name)
                if late:
                    if late_all is None:
                        late_all = set(late)
                    else:
                        late_all.update(late)
        counted: int | None = None  # the newest trade that moves the frontier (None: the newest of all)
        if tops is not None:
            counted = self._hold_newest(symbol, tops, ts, early, offset)
        if late_all:
            for i in sorted(late_all):
                self._dead_letter(
                    feed, "late", f"ts {ts[i]} behind the watermark",
                    tick_raw(symbol, ts[i], px[i], sz[i], ids[i]), recv_ns,
                )  # fmt: skip
        accepted = n - (len(late_all) if late_all else 0)
        self.ticks_accepted += accepted
        feed.health.ticks += accepted
        key = (name, symbol)
        self._tick_counts[key] = self._tick_counts.get(key, 0) + accepted
        newest = (ts[0] if n == 1 else max(ts)) if tops is None else counted
        if newest is not None and newest >= self._last_active_ts.get(symbol, 0):
            self._last_active_ts[symbol] = newest
        self._last_price[symbol] = px[-1]
        self._last_trade_wall[symbol] = recv_ns
        if len(self._routes[symbol]) > 1:  # remembered only where a handover can happen
            self._recent(symbol).extend(zip([t // 1_000_000 for t in ts], px, sz, strict=True))
        bid, ask, bsz, asz = self._quote_state.get(symbol, _NO_QUOTE)
        ring = self._buffers[symbol]
        before = ring.counters.overwritten + ring.counters.dropped
        if n == 1:
            t0 = ts[0]
            ring.write_row(t0, recv_ns, t0 + offset, px[0], sz[0], bid, ask, bsz, asz, KIND_TRADE)
        else:
            ring.write(
                n,
                {"ts_event": ts, "ts_corrected": [t + offset for t in ts] if offset else ts, "ts_init": recv_ns,
                 "price": px, "size": sz, "bid": bid, "ask": ask, "bid_size": bsz, "ask_size": asz,
                 "kind": KIND_TRADE},
            )  # fmt: skip
        lost = ring.counters.overwritten + ring.counters.dropped - before
        if lost:
            self._overflow(ring.policy).inc(lost)
        if self.config.publish_ticks:
            self._pending_ticks.setdefault(symbol, []).append((bar_ts, px, sz, recv_ns, name))
            self._pending_count += n
        self._advance(symbol, feed)

    def _flush_metrics(self) -> None:
        """Move the accepted-tick counts into the Prometheus counters (batched: one `inc` per feed and symbol),
        and the newest frame latencies into the receive-to-processed histogram."""
        counts, self._tick_counts = self._tick_counts, {}
        for key, k in counts.items():
            counter = self._tick_counters.get(key)
            if counter is None:
                counter = self._tick_counters[key] = self.metrics.ticks.labels(*key)
            counter.inc(k)
        rec = self.latency
        new = min(rec.count - self._latency_observed, rec.capacity, _LATENCY_SAMPLES_PER_TICK)
        if new > 0:
            # The newest frames of the interval: at one-trade frames a histogram `observe` per frame would cost
            # the hot path a few percent, and a sample is what the distribution needs.
            at = np.arange(rec.count - new, rec.count) % rec.capacity
            hist = self.metrics.receive_to_processed.labels("pipeline")
            for value in (np.frombuffer(rec.samples, dtype=np.int64)[at] / 1e9).tolist():
                hist.observe(value)
        self._latency_observed = rec.count

    def _ingest_quotes(self, feed: Feed, frame: ParsedFrame, recv_ns: int) -> None:
        qs = frame.q_symbol
        for i, symbol in enumerate(qs):
            bid, ask = frame.q_bid[i], frame.q_ask[i]
            ok = (
                symbol in feed.symbols
                and math.isfinite(bid)
                and math.isfinite(ask)
                and 0 < bid <= ask < self.config.max_price
            )
            if not ok:
                self._dead_letter(
                    feed, "bad_quote", f"{symbol!r} bid={bid!r} ask={ask!r}",
                    orjson.dumps({"symbol": symbol, "bid": bid, "ask": ask}).decode(), recv_ns,
                )  # fmt: skip
                continue
            if self._active.get(symbol) not in (feed, None):
                continue
            state = (bid, ask, frame.q_bid_size[i], frame.q_ask_size[i])
            self._quote_state[symbol] = state
            self._buffers[symbol].write(
                1,
                {"ts_event": frame.q_ts[i], "ts_corrected": frame.q_ts[i] + (feed.estimator.offset_ns or 0),
                 "ts_init": recv_ns, "price": self._last_price.get(symbol, math.nan), "size": 0.0,
                 "bid": state[0], "ask": state[1], "bid_size": state[2], "ask_size": state[3], "kind": KIND_QUOTE},
            )  # fmt: skip
            self.metrics.quotes.labels(feed.name).inc()

    # --- bars ---------------------------------------------------------------------------------------------------
    def _source_now(self, feed: Feed | None, wall_ns: int, symbol: str | None = None) -> int | None:
        """The source's clock, used to close windows only while `symbol` is quiet.

        While trades keep arriving, event time alone moves the frontier: a client that falls behind (frames queued
        in the socket) must not close windows by the exchange's clock before their trades are read, or it would
        refuse its own backlog as late. So the clock counts only when the symbol has been quiet for `quiet_close_ms`
        *and* the feed has nothing received but unprocessed: after a stall of this client (a blocked event loop, a
        descheduled process) the wall clock says "quiet" while the exchange's frames wait in the socket.
        """
        if feed is None:
            return None
        if symbol is not None and wall_ns - self._last_trade_wall.get(symbol, 0) < self._quiet_ns:
            return None
        delay = feed.estimator.last_delay_ns
        if delay is not None and delay > self._quiet_ns:
            return None  # the last frame was read late: frames are queued, so the clock is ahead of what we have read
        if feed.has_unread():
            return None  # the client stalled: what the exchange sent meanwhile is still to be read
        now = feed.estimator.source_now_ns(wall_ns)
        if now is not None and self.config.bar_time == "corrected":
            return wall_ns
        return now

    def _advance(self, symbol: str, feed: Feed | None, wall_ns: int | None = None) -> None:
        wall = self._now_ns() if wall_ns is None else wall_ns
        src_now = self._source_now(feed if feed is not None else self._active.get(symbol), wall, symbol)
        for agg in self.aggregators:
            for bar in agg.advance(symbol, src_now, wall):
                self._emit_bar(bar, src_now)

    def _emit_bar(self, bar: LiveBar, src_now: int | None) -> None:
        self._bars.setdefault((bar.symbol, bar.timeframe), {})[bar.ts_ns] = bar
        recent = self._bars[(bar.symbol, bar.timeframe)]
        if len(recent) > self.config.recent_bars:
            for key in sorted(recent)[: len(recent) - self.config.recent_bars]:
                del recent[key]
        labels = (bar.timeframe, bar.status)
        counter = self._bar_counters.get(labels)
        if counter is None:
            counter = self._bar_counters[labels] = self.metrics.bars.labels(*labels)
        counter.inc()
        if bar.revision == 0 and src_now is not None and not bar.backfilled:
            width = next(a.width for a in self.aggregators if a.label == bar.timeframe)
            self.bar_delay.add(src_now - (bar.ts_ns + width))
        self._queue_entry(f"bars:{bar.timeframe}:{bar.symbol}", bar.to_fields())
        for listener in self._listeners:
            listener(bar)

    def add_bar_listener(self, listener: Callable[[LiveBar], Any]) -> None:
        """Call `listener(bar)` for every emitted bar revision (in the event loop; keep it quick)."""
        self._listeners.append(listener)

    def flush_bars(self) -> list[LiveBar]:
        """Finalize every open window now (end of a replay); returns the bars."""
        wall = self._now_ns()
        out: list[LiveBar] = []
        for agg in self.aggregators:
            for bar in agg.flush(None, wall):
                self._emit_bar(bar, None)
                out.append(bar)
        return out

    # --- failover, gaps, backfill -------------------------------------------------------------------------------
    def _on_state(self, feed: Feed, state: str) -> None:
        feed.health.connected = state not in ("disconnected",) and (feed.ws is not None or state == "connected")
        if state == "disconnected":
            feed.health.connected = False
            feed.health.gaps += 1
            self.metrics.reconnects.labels(feed.name).inc()
            for shadow in feed.shadows.values():
                shadow.ticks.clear()
                shadow.overflowed = False
        for symbol in feed.symbols:
            self._reroute(symbol)

    def _reroute(self, symbol: str) -> None:
        routes = self._routes.get(symbol, [])
        current = self._active.get(symbol)
        best = next((f for f in routes if f.healthy), None)
        if best is current:
            return
        if best is not None and current is not None and current.healthy and best.priority < current.priority:
            # Failback: only once the recovered primary has been fresh for a while.
            since = self._now_ns() - best.connected_since_ns
            if since < self.config.failback_after_secs * _NS:
                return
            # A voluntary switch also waits until the recovered feed's standby trades reach back to the last trade
            # counted (the active feed may lag behind it): switching earlier would flag a gap where nothing was lost.
            last = self._last_active_ts.get(symbol)
            shadow = best.shadows.get(symbol)
            waited = since - self.config.failback_after_secs * _NS
            if last is not None and not _covers(shadow, last) and waited < self.config.failback_max_wait_secs * _NS:
                return
        self._switch(symbol, best)

    def _switch(self, symbol: str, feed: Feed | None) -> None:
        old = self._active.get(symbol)
        self._active[symbol] = feed
        last = self._last_active_ts.get(symbol)
        if old is not None:
            self.metrics.failovers.labels(symbol).inc()
            log.info("symbol %s: active source %s -> %s", symbol, old.name, feed.name if feed else None)
        if last is None:
            if feed is not None:
                self._handover(symbol, feed, None)
            return
        if feed is None:
            self._open_gap(symbol, last, old)
            return
        self._handover(symbol, feed, last, old)

    def _open_gap(self, symbol: str, last: int, counted_from: Feed | None) -> None:
        """Open `symbol`'s gap from `last`, the exchange time of the last trade counted (from `counted_from`), in
        the bars' time (`bar_time: corrected`: on our clock, by that feed's offset)."""
        if symbol in self._open_gaps:
            return
        if self.config.bar_time == "corrected" and counted_from is not None:
            last += counted_from.estimator.offset_ns or 0
        wall = self._now_ns()
        self._open_gaps[symbol] = [agg.open_gap(symbol, last, wall) for agg in self.aggregators]

    def _handover(self, symbol: str, feed: Feed, last: int | None, old: Feed | None = None) -> None:
        """Replay the new active feed's shadow after `last` (counted from `old`); open a gap where it cannot
        cover."""
        shadow = feed.shadows.get(symbol)
        ticks = self._after_last(symbol, feed, list(shadow.ticks), last) if shadow else []
        covered = shadow is not None and not shadow.overflowed and (last is None or _covers(shadow, last))
        if last is not None and not covered:
            self._open_gap(symbol, last, old)
        if shadow:
            shadow.ticks.clear()
            shadow.overflowed = False
        if last is not None:
            self._catchup[symbol] = last
        else:
            self._catchup.pop(symbol, None)
        if ticks:
            ticks.sort(key=lambda t: t[0])
            ts, px, sz, ids = (list(c) for c in zip(*ticks, strict=True))
            now = self._now_ns()
            # A bad print among them (the standby kept every trade) must not move the frontier either.
            self._aggregate(feed, symbol, ts, px, sz, ids, now, feed.estimator.offset_ns or 0, feed.clock_bound(now))

    def _after_last(
        self, symbol: str, feed: Feed, ticks: list[tuple[int, float, float, Any]], last: int | None
    ) -> list[tuple[int, float, float, Any]]:
        """The shadow ticks that come after the last aggregated trade.

        Feeds stamp at different precisions (Alpaca ns, the others ms) and number trades differently, so the same
        trade is recognized by (millisecond, price, size) against the recently aggregated ones; anything older
        than the last aggregated trade's millisecond is already counted.
        """
        if last is None:
            return ticks
        recent = set(self._recent_active.get(symbol, ()))
        bucket = last // 1_000_000
        out = [t for t in ticks if t[0] // 1_000_000 >= bucket and (t[0] // 1_000_000, t[1], t[2]) not in recent]
        out.sort(key=lambda t: t[0])
        return out

    def _history_for(self, symbol: str) -> list[HistoricalSource]:
        """Where `symbol`'s gaps are backfilled from, in the order tried: `history=` when given (it replaces the
        defaults), else each of its sources' own history client by feed priority (`config.backfill: provider`)."""
        h = self._history
        if h is not None:
            one = h.get(symbol) if isinstance(h, Mapping) else h
            return [one] if one is not None else []
        if self.config.backfill == "none":
            return []
        out: list[HistoricalSource] = []
        for feed in self._routes.get(symbol, []):
            source = self._provider_history(feed.config.source)
            if source is not None and all(source is not s for s in out):
                out.append(source)
        return out

    def _provider_history(self, source: DataSource) -> HistoricalSource | None:
        if source in self._provider_histories:
            return self._provider_histories[source]
        from gpt_trader.realtime.config import providers_from_environ
        from gpt_trader.realtime.sources.history import provider_history

        client: HistoricalSource | None = None
        try:
            if self._providers is None:
                self._providers = providers_from_environ(self._environ)
            client = provider_history(
                source, self._providers, self._environ, replay_timestamps=self.config.replay.timestamps
            )
        except (SourceError, ConfigError) as exc:  # e.g. no keys: its gaps stay flagged, the stream goes on
            log.warning("no backfill from %s: %s", source.value, exc)
        self._provider_histories[source] = client
        return client

    def _check_gaps(self, wall: int) -> None:
        for agg in self.aggregators:
            for gap in agg.pending_gaps():
                if any(gap is g for gs in self._open_gaps.values() for g in gs) or getattr(gap, "_started", False):
                    continue
                src_now = self._source_now(self._active.get(gap.symbol), wall, gap.symbol)
                # Timed out from when the feed came back and the gap's last window could close (an outage of any
                # length, a gap in a 1m window): from when it opened, long outages were never backfilled at all.
                timed_out = gap.end_ns is not None and wall - gap.closed_wall_ns > (
                    agg.width + agg.lateness_ns + int(self.config.backfill_timeout_secs * _NS)
                )
                if timed_out:
                    agg.resolve_gap(gap, None)
                    continue
                if agg.gap_ready(gap, src_now):
                    gap._started = True  # type: ignore[attr-defined]
                    task = asyncio.create_task(self._backfill(agg, gap))
                    self._backfills.add(task)
                    task.add_done_callback(self._backfills.discard)

    async def _backfill(self, agg: BarAggregator, gap: Gap) -> None:
        """Fill the gap's windows from the first history source with bars for it; all within `backfill_timeout_secs`."""
        bars: list[tuple[int, float, float, float, float, float]] | None = None
        first, last_end = agg.gap_windows(gap)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.backfill_timeout_secs
        used = "none"
        for source in self._history_for(gap.symbol):
            used = getattr(source, "name", type(source).__name__)
            try:
                from gpt_trader.realtime.replay import canonical_symbol

                name = canonical_symbol(gap.symbol) if used == "bundled" else gap.symbol
                frame = await asyncio.wait_for(
                    _in_daemon_thread(
                        source.fetch, name, ns_to_datetime(first), ns_to_datetime(last_end), agg.timeframe
                    ),
                    max(0.0, deadline - loop.time()),
                )
                ts = frame["ts"].dt.epoch("ns").to_list()
                cols = [frame[c].to_list() for c in ("open", "high", "low", "close", "volume")]
                bars = list(zip(ts, *cols, strict=True))
                if bars:
                    break
                log.warning("backfill %s %s: %s has no bars in the gap", gap.symbol, agg.label, used)
            except (SourceError, TimeoutError, OSError, ValueError) as exc:
                log.warning("backfill %s %s from %s failed: %s", gap.symbol, agg.label, used, exc)
        filled = agg.resolve_gap(gap, bars)
        log.info("backfill %s %s from %s: %d window(s) filled", gap.symbol, agg.label, used, filled)
        self._advance(gap.symbol, None)

    # --- periodic work ------------------------------------------------------------------------------------------
    async def _ticker(self) -> None:
        period = self.config.tick_interval_ms / 1000
        while not self._stop.is_set():
            await asyncio.sleep(period)
            wall = self._now_ns()
            for symbol in self._routes:
                self._advance(symbol, None, wall)
                if self._active.get(symbol) is None or not self._active[symbol].healthy:  # type: ignore[union-attr]
                    self._reroute(symbol)
                elif self._routes[symbol][0] is not self._active[symbol]:
                    self._reroute(symbol)  # failback check
            self._check_gaps(wall)
            self._flush_metrics()
            self._publish_health(wall)

    def _publish_health(self, wall: int) -> None:
        """Set the per-source health, clock-offset and delay metrics (the ticker's pass; also once at start)."""
        self.metrics.bus_pending.set(self._pending_count)
        for symbol in self._routes:
            update_disagreement([f.health for f in self._routes[symbol]], symbol)
        for f in self._feeds:
            h = f.health
            self.metrics.health.labels(f.name).set(h.score(wall, stale_after_secs=self.config.stale_after_secs))
            if f.estimator.offset_ns is not None:
                self.metrics.clock_offset.labels(f.name).set(f.estimator.offset_ns / 1e9)
                self.metrics.exchange_to_receive.labels(f.name).observe(max(0.0, h.delay_ewma_ns / 1e9))
            if f.estimator.last_sample_ns is not None:
                self.metrics.raw_delay.labels(f.name).set(f.estimator.last_sample_ns / 1e9)

    def _queue_entry(self, stream: str, fields: dict[str, Any]) -> None:
        self._pending_entries.setdefault(stream, []).append(fields)
        self._pending_count += 1

    async def _flusher(self) -> None:
        """Publish the queue every `flush_interval_ms`; while the bus fails, back off exponentially. Exits at stop
        after the flush in progress (`stop` drains the rest), so a publish is never cut off halfway."""
        period = self.config.flush_interval_ms / 1000
        delay = period
        while not self._stop.is_set():
            if delay == period:
                await asyncio.sleep(period)
            else:  # a backoff wait ends early at stop
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
            if self._stop.is_set():
                break
            if await self._try_flush():
                delay = period
            else:
                delay = min(_BUS_BACKOFF_MAX_SECS, max(_BUS_BACKOFF_BASE_SECS, delay * 2))

    async def _try_flush(self, limit_secs: float | None = None) -> bool:
        """One `_flush` (cut off after `limit_secs`: it then puts its batch back); a failure is counted and reported
        (`_bus_failed`), a success after failures ends the outage (`_bus_recovered`). True when it succeeded."""
        try:
            await asyncio.wait_for(self._flush(), limit_secs)
        except Exception as exc:
            self._bus_failed(exc)
            return False
        if self._bus_down_since is not None:
            self._bus_recovered()
        return True

    async def _drain(self, deadline: float) -> None:
        """Publish what is queued, retrying with backoff until `deadline`; log and count whatever is left."""
        delay = _BUS_BACKOFF_BASE_SECS
        while self._pending_entries or self._pending_ticks:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # A hung bus is cut off at the deadline: `_flush` puts its batch back, so the report counts it.
            if not await self._try_flush(left):
                await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(_BUS_BACKOFF_MAX_SECS, delay * 2)
        if self._pending_entries or self._pending_ticks:
            entries, ticks = self._queued()
            log.error(
                "bus %s: stopped with %d ticks and %d other entries (bars, dead letters) unpublished after %.1fs of "
                "retries (last error: %s); they are dropped",
                self._bus_url(), ticks, entries, self.config.bus_drain_timeout_secs, self._bus_last_error or "-",
            )  # fmt: skip
            self._bus_dropped["stop"] += entries
            self._bus_dropped_ticks += ticks
            self.metrics.bus_dropped.labels("stop").inc(entries + ticks)
            self._pending_entries, self._pending_ticks = {}, {}
            self._pending_count = 0
        self.metrics.bus_pending.set(self._pending_count)

    def _queued(self) -> tuple[int, int]:
        """(entries other than ticks, ticks) queued for the bus, encoded or not."""
        entries = ticks = 0
        for stream, queued in self._pending_entries.items():
            if stream.startswith("ticks:"):
                ticks += sum(int(e["n"]) for e in queued)
            else:
                entries += len(queued)
        return entries, ticks + sum(len(p[0]) for parts in self._pending_ticks.values() for p in parts)

    def _bus_url(self) -> str:
        return str(getattr(self.bus, "url", type(self.bus).__name__))

    def _bus_failed(self, exc: BaseException) -> None:
        """Count a failed flush; log the first of an outage, then one summary per `_BUS_REPORT_SECS`."""
        now = time.monotonic()
        self._bus_failures += 1
        self._bus_last_error = f"{type(exc).__name__}: {exc or 'no reply in time'}"
        self.metrics.bus_failures.inc()
        self.metrics.bus_pending.set(self._pending_count)
        if self._bus_down_since is None:
            self._bus_down_since = now
            self._bus_next_report = now + _BUS_REPORT_SECS
            self.metrics.bus_up.set(0)
            log.warning(
                "bus %s unreachable or failing (%s): keeping %d ticks and entries queued, retrying with backoff "
                "(up to %.0fs); the feeds wait once %d are queued",
                self._bus_url(), self._bus_last_error, self._pending_count, _BUS_BACKOFF_MAX_SECS,
                self.config.max_pending_ticks,
            )  # fmt: skip
        elif now >= self._bus_next_report:
            self._bus_next_report = now + _BUS_REPORT_SECS
            log.warning(
                "bus %s down for %.0fs: %d failed flushes, %d ticks and entries queued; last error: %s",
                self._bus_url(), now - self._bus_down_since, self._bus_failures, self._pending_count,
                self._bus_last_error,
            )  # fmt: skip

    def _bus_recovered(self) -> None:
        down = time.monotonic() - (self._bus_down_since or time.monotonic())
        self._bus_down_since = None
        self.metrics.bus_up.set(1)
        self.metrics.bus_pending.set(self._pending_count)
        log.info("bus %s back after %.1fs; the queued ticks and entries are published", self._bus_url(), down)

    def _drop(self, reason: str, rejected: Sequence[tuple[str, Fields, str]]) -> int:
        """Log (one line per stream) and count entries the bus will never take; returns the ticks among them."""
        by_stream: dict[str, list[str]] = {}
        ticks = 0
        for stream, fields, why in rejected:
            by_stream.setdefault(stream, []).append(why)
            if stream.startswith("ticks:"):
                ticks += int(fields["n"])
        for stream, whys in by_stream.items():
            log.error(
                "bus %s refused %d entries of stream %r for good (%s); dropped, the other streams go on",
                self._bus_url(), len(whys), stream, whys[0],
            )  # fmt: skip
        self._bus_dropped[reason] += len(rejected)
        self._bus_dropped_ticks += ticks
        self.metrics.bus_dropped.labels(reason).inc(len(rejected))
        return ticks

    def _requeue(self, unsent: dict[str, list[Fields]]) -> None:
        """Put `unsent` back ahead of what was queued since (order per stream is kept)."""
        for stream, entries in self._pending_entries.items():
            unsent.setdefault(stream, []).extend(entries)
        self._pending_entries = unsent

    async def _flush(self) -> None:
        """Publish the queued entries and the pending ticks (one `ticks:<SYM>` entry per symbol). Whatever stops the
        publish, an error or a cancellation, the entries not written go back to the front of the queue; entries
        the bus refuses for good are dropped (logged, counted) so they cannot block the rest."""
        batches = self._pending_entries
        ticks = self._pending_ticks
        if not batches and not ticks:
            self._flushed.set()
            return
        self._pending_entries, self._pending_ticks = {}, {}
        for symbol, parts in ticks.items():
            if any(isinstance(p[0], np.ndarray) for p in parts):
                ts = np.concatenate([np.asarray(p[0], dtype=np.int64) for p in parts])
                price = np.concatenate([np.asarray(p[1], dtype=np.float64) for p in parts])
                size = np.concatenate([np.asarray(p[2], dtype=np.float64) for p in parts])
            else:  # lists only (small frames, batched single trades): one conversion per column, not per part
                ts = np.array(list(chain.from_iterable(p[0] for p in parts)), dtype=np.int64)
                price = np.array(list(chain.from_iterable(p[1] for p in parts)), dtype=np.float64)
                size = np.array(list(chain.from_iterable(p[2] for p in parts)), dtype=np.float64)
            payload = orjson.dumps(
                {
                    "symbol": symbol, "n": len(ts), "ts_event": ts, "price": price, "size": size,
                    "ts_init": np.repeat(np.array([p[3] for p in parts], dtype=np.int64), [len(p[0]) for p in parts]),
                    "source": parts[-1][4],
                },
                option=orjson.OPT_SERIALIZE_NUMPY,
            )  # fmt: skip
            batches.setdefault(f"ticks:{symbol}", []).append({"n": len(ts), "data": payload})
        unsent = batches
        lost_ticks = 0
        try:
            try:
                await self.bus.publish(batches)
                unsent = {}
            except PublishError as exc:  # some written: re-send only what failed for a passing reason
                unsent = exc.retry
                lost_ticks = self._drop("rejected", exc.rejected)
                if unsent:
                    raise
            except BusFieldError:  # nothing was sent: drop the bad entries, the rest goes out on the next flush
                unsent, invalid = {}, []
                for stream, entries in batches.items():
                    for fields in entries:
                        try:
                            check_fields(stream, fields)
                        except BusFieldError as bad:
                            invalid.append((stream, fields, str(bad)))
                        else:
                            unsent.setdefault(stream, []).append(fields)
                lost_ticks = self._drop("invalid", invalid)
        finally:
            # Ticks count as published once written, whichever flush wrote them (a re-sent batch included).
            self.ticks_published += self._tick_total(batches) - self._tick_total(unsent) - lost_ticks
            if unsent:
                self._requeue(unsent)
            n_entries, n_ticks = self._queued()
            self._pending_count = n_entries + n_ticks
        if not unsent:
            self._flushed.set()

    @staticmethod
    def _tick_total(batches: Mapping[str, Sequence[Fields]]) -> int:
        return sum(int(e["n"]) for stream, entries in batches.items() if stream.startswith("ticks:") for e in entries)

    # --- reading ------------------------------------------------------------------------------------------------
    def get_live_data(self, symbol: str, last: int | None = None) -> pd.DataFrame:
        """Recent trades and quotes of `symbol`, oldest first: ts_event (exchange clock), ts_corrected (exchange time
        on our clock, by the estimated offset), ts_init (received), price, size, bid, ask, their sizes, event.

        Quote rows carry the last trade price and size 0; trade rows carry the top of book in force. Empty (with
        the columns) before the first event.
        """
        import pandas as pd

        symbol = symbol.upper()
        ring = self._buffers.get(symbol)
        if ring is None:
            raise KeyError(f"{symbol!r} is not subscribed; symbols: {sorted(self._buffers)}")
        snap = ring.snapshot(last)
        frame = pd.DataFrame(
            {
                "ts_event": pd.to_datetime(snap["ts_event"], unit="ns", utc=True),
                "ts_corrected": pd.to_datetime(snap["ts_corrected"], unit="ns", utc=True),
                "ts_init": pd.to_datetime(snap["ts_init"], unit="ns", utc=True),
                "price": snap["price"], "size": snap["size"], "bid": snap["bid"], "ask": snap["ask"],
                "bid_size": snap["bid_size"], "ask_size": snap["ask_size"],
                "event": np.where(snap["kind"] == KIND_TRADE, "trade", "quote"),
            }
        )  # fmt: skip
        frame["symbol"] = symbol
        return frame

    def get_bars(self, symbol: str, timeframe: str | None = None, include_open: bool = True) -> pd.DataFrame:
        """Recent bars (latest revision per window), plus the open windows as provisional rows."""
        import pandas as pd

        symbol = symbol.upper()
        tf = timeframe or self.aggregators[0].label
        bars = dict(self._bars.get((symbol, tf), {}))
        if include_open:
            agg = next((a for a in self.aggregators if a.label == tf), None)
            if agg is None:
                raise KeyError(f"no {tf} bars; timeframes: {[a.label for a in self.aggregators]}")
            for bar in agg.open_windows(symbol):
                bars.setdefault(bar.ts_ns, bar)
        rows = [bars[k] for k in sorted(bars)]
        cols = [
            "ts",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "vwap",
            "trades",
            "status",
            "gap",
            "backfilled",
            "revision",
            "source",
        ]
        return pd.DataFrame(
            [[pd.Timestamp(b.ts_ns, unit="ns", tz="UTC"), b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trades,
              b.status, b.gap, b.backfilled, b.revision, b.source] for b in rows],
            columns=cols,
        )  # fmt: skip

    def final_bars(self, symbol: str, timeframe: str | None = None) -> list[LiveBar]:
        """Final bars still held in memory (the newest `recent_bars`), oldest first."""
        tf = timeframe or self.aggregators[0].label
        held = self._bars.get((symbol.upper(), tf), {})
        return [held[k] for k in sorted(held) if held[k].final]

    def active_source(self, symbol: str) -> str | None:
        """Name of the feed now feeding `symbol`'s bars."""
        feed = self._active.get(symbol.upper())
        return feed.name if feed else None

    @property
    def feeds(self) -> list[Feed]:
        """The configured feeds, in priority order."""
        return list(self._feeds)

    def health(self) -> dict[str, dict[str, Any]]:
        """Per-source health: score, connection, staleness, delay, offset, gaps, disagreement."""
        wall = self._now_ns()
        return {
            f.name: {
                "score": f.health.score(wall, stale_after_secs=self.config.stale_after_secs),
                "connected": f.health.connected,
                "stale": f.stale,
                "staleness_secs": f.health.staleness_secs(wall),
                "delay_ms": f.health.delay_ewma_ns / 1e6,
                "clock_offset_ms": None if f.estimator.offset_ns is None else f.estimator.offset_ns / 1e6,
                "reconnects": f.health.reconnects,
                "gaps": f.health.gaps,
                "ticks": f.health.ticks,
                "rejects": f.health.rejects,
                "disagreement_bps": f.health.disagreement_bps,
            }
            for f in self._feeds
        }

    def bus_health(self) -> dict[str, Any]:
        """The bus writer: up or down (and since when), failed flushes, what is queued, what was dropped and why,
        and what the bus itself lost or repaired. Apart from `health()`, whose keys are the feeds."""
        entries, ticks = self._queued()
        down = self._bus_down_since
        return {
            "url": self._bus_url(),
            "up": down is None,
            "down_secs": 0.0 if down is None else time.monotonic() - down,
            "failures": self._bus_failures,
            "last_error": self._bus_last_error,
            "pending_entries": entries,
            "pending_ticks": ticks,
            "dropped_entries": dict(self._bus_dropped),
            "dropped_ticks": self._bus_dropped_ticks,
            **vars(getattr(self.bus, "stats", None) or {}),
        }

    def stats(self) -> dict[str, Any]:
        """Counters for dashboards, tests and benchmarks."""
        self._flush_metrics()
        return {
            "bus": self.bus_health(),
            "ticks_accepted": self.ticks_accepted,
            "ticks_published": self.ticks_published,
            "dead_letters": self.dead_letters.by_reason(),
            "bars": {a.label: vars(a.counters).copy() for a in self.aggregators},
            "buffers": {s: vars(r.counters).copy() for s, r in self._buffers.items()},
            "latency_ms": self.latency.percentiles(),
            "pending_gaps": sum(len(a.pending_gaps()) for a in self.aggregators),
        }
