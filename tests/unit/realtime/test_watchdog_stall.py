"""The stale-feed watchdog tells a silent feed from a stalled process: when its own wake-up comes a whole period
late (CPU starved, a long GC, a blocking call), the feed's frames may be waiting unread and every feed would look
silent at once, so it lets the readers run before it judges. Seen on a loaded machine: a 2 s stall failed both feeds
over and reconnected both."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gpt_trader.realtime import DataSource, RealtimePipeline, StreamConfig
from gpt_trader.realtime.bus import InProcessBus
from gpt_trader.realtime.config import RealtimeConfig
from gpt_trader.realtime.feed import Feed, _watchdog

ENV = {"APCA_API_KEY_ID": "k", "APCA_API_SECRET_KEY": "s"}
STALE, RECONNECT = 0.2, 0.5  # seconds: the watchdog looks every 0.05 s


class _Transport:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


class _Ws:
    def __init__(self) -> None:
        self.transport = _Transport()


async def _feed(config: RealtimeConfig) -> Feed:
    p = RealtimePipeline(
        [StreamConfig(DataSource.ALPACA, ["AAA"], url="ws://127.0.0.1:9")], config, bus=InProcessBus(), environ=ENV
    )
    await p._build_feeds()
    feed = p.feeds[0]
    feed.ws = _Ws()
    feed.health.last_message_ns = time.time_ns()
    return feed


def _watch(stall_secs: float, frames_after_stall: bool, observe_secs: float) -> tuple[list[str], Any]:
    config = RealtimeConfig(stale_after_secs=STALE, reconnect_after_stale_secs=RECONNECT, start_timeout_secs=0)

    async def go() -> tuple[list[str], Any]:
        feed = await _feed(config)
        states: list[str] = []
        dog = asyncio.create_task(_watchdog(feed, config, lambda f, state: states.append(state), time.time_ns))
        await asyncio.sleep(0.12)  # a few rounds with a fresh feed
        feed.health.last_message_ns = time.time_ns()
        time.sleep(stall_secs)  # noqa: ASYNC251  (the point: the whole process stalls, no task runs)
        if frames_after_stall:
            await asyncio.sleep(0.01)  # the reader drains what queued up meanwhile, just after the stall
            feed.health.last_message_ns = time.time_ns()
        await asyncio.sleep(observe_secs)
        dog.cancel()
        return states, feed

    return asyncio.run(go())


def test_a_stall_of_the_process_is_not_the_feeds_silence() -> None:
    states, feed = _watch(stall_secs=0.4, frames_after_stall=True, observe_secs=0.08)
    assert states == []  # it went stale at once when the watchdog judged before the reader ran
    assert not feed.stale
    assert not feed.ws.transport.aborted


def test_a_silent_feed_is_still_judged_after_a_stall() -> None:
    states, feed = _watch(stall_secs=0.6, frames_after_stall=False, observe_secs=0.3)
    assert states == ["stale"]  # one round later: silent before, during and after the stall
    assert feed.stale
    assert feed.ws.transport.aborted


def test_a_process_late_on_every_round_still_judges() -> None:
    config = RealtimeConfig(stale_after_secs=STALE, reconnect_after_stale_secs=RECONNECT, start_timeout_secs=0)

    async def go() -> Feed:
        feed = await _feed(config)
        dog = asyncio.create_task(_watchdog(feed, config, lambda f, state: None, time.time_ns))
        for _ in range(12):  # every round wakes ~3 periods late; the feed says nothing
            await asyncio.sleep(0)
            time.sleep(0.15)  # noqa: ASYNC251  (a stall on purpose)
        dog.cancel()
        return feed

    feed = asyncio.run(go())
    assert feed.stale
    assert feed.ws.transport.aborted
