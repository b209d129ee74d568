"""One websocket feed: connect, handshake, receive, reconnect with exponential backoff and full jitter.

Frames go straight to the pipeline's `on_frame` coroutine in the receive loop (no queue to overflow: when the
pipeline is busy, TCP pushes back on the exchange). A watchdog marks the feed stale after `stale_after_secs`
without a message (failover can react) and aborts the connection after `reconnect_after_stale_secs`;
websockets' own pings are the heartbeat.

`Feed.has_unread()` says whether the connection holds data that arrived but has not been processed yet (a client
that stalled: frames queued in websockets' buffer or bytes in the kernel's socket buffer); the pipeline never
closes bar windows by the exchange's clock while it does, or it would refuse its own backlog as late.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gpt_trader.core.errors import SourceError
from gpt_trader.realtime.clock import OffsetEstimator
from gpt_trader.realtime.config import RealtimeConfig
from gpt_trader.realtime.health import SourceHealth
from gpt_trader.realtime.models import StreamConfig
from gpt_trader.realtime.sources.base import StreamAdapter

log = logging.getLogger(__name__)

try:  # POSIX: bytes waiting in a socket's kernel receive buffer
    import fcntl
    import termios

    _FIONREAD: int | None = termios.FIONREAD
except (ImportError, AttributeError):  # pragma: no cover - Windows
    _FIONREAD = None


def kernel_unread(sock: Any) -> int:
    """Bytes received by the kernel for `sock` and not yet read by the process (0 where unknown)."""
    if _FIONREAD is None or sock is None:
        return 0
    try:
        fd = sock.fileno()
        if fd < 0:
            return 0
        return int(struct.unpack("i", fcntl.ioctl(fd, _FIONREAD, b"\0\0\0\0"))[0])
    except (OSError, ValueError, AttributeError):
        return 0


def unread_input(ws: Any) -> bool:
    """True when the websocket connection `ws` holds received data its reader has not taken yet.

    Looks, in order, at the messages websockets' asyncio connection has assembled and buffered for `recv()`
    (`recv_messages.frames`, websockets >= 13), the bytes of a frame it is still parsing (`protocol.reader.buffer`)
    and the kernel's receive buffer of the socket (FIONREAD): after the event loop stalls, the exchange's frames
    may sit in any of them. Attributes a websockets version lacks are skipped (the kernel check remains).
    """
    frames = getattr(getattr(ws, "recv_messages", None), "frames", None)
    if frames is not None:
        with contextlib.suppress(TypeError):
            if len(frames):
                return True
    buffer = getattr(getattr(getattr(ws, "protocol", None), "reader", None), "buffer", None)
    if buffer:
        return True
    transport = getattr(ws, "transport", None)
    if transport is None:
        return False
    with contextlib.suppress(Exception):
        if not transport.is_closing() and not transport.is_reading():
            return True  # reading paused by websockets' backpressure: its buffer is over the high-water mark
    return kernel_unread(transport.get_extra_info("socket")) > 0


def _queued_messages(ws: Any) -> Callable[[], bool] | None:
    """A check that says whether `ws.recv()` has a complete message queued (websockets >= 13's asyncio
    connection: its assembler's frame queue starts with a final frame), so it returns without waiting; None when
    the connection does not expose that queue (then frames are handled one by one)."""
    queue = getattr(getattr(getattr(ws, "recv_messages", None), "frames", None), "queue", None)
    if not isinstance(queue, deque):
        return None

    def queued() -> bool:
        return bool(queue) and getattr(queue[0], "fin", False) is True

    return queued


def backoff_delay(attempt: int, base_secs: float, max_secs: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max, base * 2**attempt)] (AWS' recommendation)."""
    return rng.uniform(0.0, min(max_secs, base_secs * (2 ** min(attempt, 30))))


@dataclass
class Shadow:
    """A standby feed's recent trades of one symbol, for a gap-free handover when it becomes active."""

    ticks: deque[tuple[int, float, float, Any]]
    overflowed: bool = False


@dataclass
class Feed:
    """Connection state of one configured stream."""

    config: StreamConfig
    adapter: StreamAdapter
    url: str
    priority: int
    health: SourceHealth
    estimator: OffsetEstimator
    symbols: frozenset[str]
    check_future: bool = True
    stale: bool = False
    connected_since_ns: int = 0
    shadows: dict[str, Shadow] = field(default_factory=dict)
    ws: Any = None
    # True while a batch of frames taken from the connection is being handed over: those not processed yet are
    # no longer in the connection's buffers, but still unread for `has_unread`.
    in_batch: bool = False

    @functools.cached_property
    def name(self) -> str:
        """The feed's label (cached: read per frame on the hot path; the config is frozen)."""
        return self.config.label

    @property
    def healthy(self) -> bool:
        """Connected and not stale."""
        return self.health.connected and not self.stale

    def observe_clock(self, recv_ns: int, event_ns: int) -> tuple[int, int | None]:
        """Fold a frame's newest exchange time, received at `recv_ns`, into the clock-offset estimate and the
        delay average; returns the offset estimate now, and `clock_bound(recv_ns)` when the estimator set the
        sample aside as stamped ahead of the source's clock (else None)."""
        aside = self.estimator.outliers
        offset = self.estimator.observe(recv_ns, event_ns)
        # A sample set aside as early says nothing about the delay, nor does the first sample alone (maybe a bad
        # print): the frame's trades are checked against the bound.
        if self.estimator.outliers != aside or self.estimator.provisional:
            return offset, self.clock_bound(recv_ns)
        # The delay (`last_delay_ns`) is this sample over the offset; spelled out because this runs once per frame.
        self.health.observe_delay(recv_ns - event_ns - offset)
        return offset, None

    def clock_bound(self, recv_ns: int) -> int | None:
        """The source's clock at `recv_ns` plus the estimator's outlier margin (exchange ns): trades stamped past it
        are ahead of the clock (None where the estimator sets nothing aside, or has no estimate yet). While the
        estimate rests on the first sample alone (`provisional`), our own clock stands in for the source's."""
        est = self.estimator
        if est.outlier_ns is None or est.offset_ns is None:
            return None
        if est.provisional:  # resting on the first sample alone, which may be a bad print: our clock serves
            return recv_ns + est.outlier_ns
        return recv_ns - est.offset_ns + est.outlier_ns

    def observe_clock_run(self, recv_ns: int, events_ns: Sequence[int], ahead_ns: int | None = None) -> list[int]:
        """`observe_clock` for the newest exchange time of each of several frames received together, in turn, up to
        the first that the estimator would set aside or, with `ahead_ns`, further ahead of the source's clock than
        that, as estimated before it (see `OffsetEstimator.observe_run`): those are the per-frame path's. Returns
        the offset estimate after each time observed."""
        offsets = self.estimator.observe_run(recv_ns, events_ns, ahead_ns, stop_early=True)
        self.health.observe_delays([recv_ns - t - o for t, o in zip(events_ns, offsets, strict=False)])
        return offsets

    def observe_clock_array(
        self, recv_ns: int, events_ns: npt.NDArray[np.int64], ahead_ns: int | None = None
    ) -> npt.NDArray[np.int64]:
        """`observe_clock_run` for exchange times in an int64 array (a long run of frames), the offsets as one."""
        offsets = self.estimator.observe_run_array(recv_ns, events_ns, ahead_ns, stop_early=True)
        k = len(offsets)
        # The delays in C where int64 surely holds them: receive times before 2043 and offsets above -2**62 (a
        # trade stamped centuries ahead on a feed not checked for the future takes Python's ints).
        if k and recv_ns < 2**61 and int(offsets.min()) > -(2**62):
            delays = (recv_ns - events_ns[:k] - offsets).tolist()
        else:
            delays = [recv_ns - t - o for t, o in zip(events_ns[:k].tolist(), offsets.tolist(), strict=True)]
        self.health.observe_delays(delays)
        return offsets

    def has_unread(self) -> bool:
        """True while this feed's connection holds frames that arrived but were not processed yet."""
        if self.in_batch:
            return True
        ws = self.ws
        return ws is not None and unread_input(ws)

    def shadow(self, symbol: str, capacity: int) -> Shadow:
        """This feed's standby buffer for `symbol`."""
        s = self.shadows.get(symbol)
        if s is None:
            s = self.shadows[symbol] = Shadow(deque(maxlen=capacity))
        return s


async def run_feed(
    feed: Feed,
    config: RealtimeConfig,
    on_frame: Callable[[Feed, Any, int], Awaitable[None]],
    on_state: Callable[[Feed, str], None],
    stop: asyncio.Event,
    *,
    rng: random.Random | None = None,
    now_ns: Callable[[], int] = time.time_ns,
    on_frames: Callable[[Feed, list[Any], int], Awaitable[None]] | None = None,
    max_batch: int = 512,
) -> None:
    """Keep `feed` connected until `stop` is set.

    With `on_frames`, the frames that are already waiting in the connection when one is received (the client
    fell behind the exchange) are taken together, up to `max_batch`, and handed over in one call with one
    receive time; a frame that arrives alone goes to `on_frame`.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

    rng = rng or random.Random()
    attempt = 0
    endpoint = feed.adapter.endpoint(feed.url, sorted(feed.symbols), feed.config.stream_types)
    while not stop.is_set():
        watchdog: asyncio.Task[None] | None = None
        try:
            async with connect(
                endpoint,
                proxy=None,
                open_timeout=config.open_timeout_secs,
                ping_interval=config.ping_interval_secs,
                ping_timeout=config.ping_interval_secs * 2,
                max_size=2**23,
                max_queue=64,
                compression=None,
            ) as ws:
                await feed.adapter.handshake(ws, sorted(feed.symbols), feed.config.stream_types)
                attempt = 0
                feed.ws = ws
                feed.connected_since_ns = now_ns()
                feed.health.last_message_ns = feed.connected_since_ns
                feed.stale = False
                on_state(feed, "connected")
                watchdog = asyncio.create_task(_watchdog(feed, config, on_state, now_ns), name=f"watchdog-{feed.name}")
                recv = ws.recv
                queued = _queued_messages(ws) if on_frames is not None else None
                while not stop.is_set():
                    raw = await recv()
                    if queued is None or on_frames is None or not queued():
                        await on_frame(feed, raw, now_ns())
                        continue
                    batch = [raw]
                    feed.in_batch = True
                    try:
                        while len(batch) < max_batch and queued():
                            batch.append(await recv())  # a complete message is queued: returns without waiting
                    finally:
                        try:
                            await on_frames(feed, batch, now_ns())
                        finally:
                            feed.in_batch = False
        except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError, SourceError, InvalidURI) as exc:
            if isinstance(exc, InvalidURI):
                raise SourceError(f"{feed.name}: invalid websocket URL {endpoint!r}") from None
            log.warning("feed %s: %s: %s", feed.name, type(exc).__name__, exc)
        except asyncio.CancelledError:
            raise
        finally:
            if watchdog is not None:
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watchdog
            was_connected = feed.health.connected
            feed.ws = None
            if was_connected:
                on_state(feed, "disconnected")
        if stop.is_set():
            break
        delay = backoff_delay(attempt, config.backoff_base_secs, config.backoff_max_secs, rng)
        attempt += 1
        feed.health.reconnects += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


async def _watchdog(
    feed: Feed, config: RealtimeConfig, on_state: Callable[[Feed, str], None], now_ns: Callable[[], int]
) -> None:
    period = min(0.1, config.stale_after_secs / 4)
    clock = asyncio.get_running_loop().time
    judged = True
    while True:
        asleep_since = clock()
        await asyncio.sleep(period)
        # Waking a whole period late means this process stalled (CPU starved, a long GC or a blocking call): the
        # feed's frames may be waiting unread, and every feed would look silent at once. The readers run first, and
        # the verdict waits one round; only one, so a process late on every round still judges every other one.
        if clock() - asleep_since > 2 * period and judged:
            judged = False
            continue
        judged = True
        quiet = (now_ns() - feed.health.last_message_ns) / 1e9
        if quiet > config.stale_after_secs and not feed.stale:
            feed.stale = True
            feed.health.stale_events += 1
            on_state(feed, "stale")
        elif quiet <= config.stale_after_secs and feed.stale:
            feed.stale = False
            on_state(feed, "fresh")
        if quiet > config.reconnect_after_stale_secs and feed.ws is not None:
            log.warning("feed %s: no message for %.1fs; reconnecting", feed.name, quiet)
            feed.ws.transport.abort()  # recv() raises ConnectionClosed and the reconnect loop takes over
            return
