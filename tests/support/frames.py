"""Feeding recorded frames to a pipeline in-process, the way the feed hands them over, for parser/ingest tests."""

from __future__ import annotations

import asyncio
import time

from gpt_trader.realtime import DataSource, RealtimePipeline, StreamConfig
from gpt_trader.realtime.bus import InProcessBus
from gpt_trader.realtime.config import RealtimeConfig

KEYS = {"APCA_API_KEY_ID": "k", "APCA_API_SECRET_KEY": "s", "POLYGON_API_KEY": "k"}


def run_frames(
    source: DataSource, frames: list[bytes], batched: bool, symbols: tuple[str, ...] = ("AAA",)
) -> RealtimePipeline:
    """A pipeline with one feed of `source` (1 s bars, in-process bus) after `frames`, all received now: through
    `_on_frames` as one batch when `batched`, else `_on_frame` one by one. The live buffer is read back at the end
    (a row it cannot hold raises there)."""

    async def go() -> RealtimePipeline:
        p = RealtimePipeline(
            [StreamConfig(source, list(symbols), url="ws://127.0.0.1:9")],
            RealtimeConfig(timeframes=["1s"], start_timeout_secs=0),
            bus=InProcessBus(),
            environ=KEYS,
        )
        await p._build_feeds()
        feed = p.feeds[0]
        feed.health.connected = True
        recv = time.time_ns()
        if batched:
            feed.in_batch = True
            await p._on_frames(feed, frames, recv)
            feed.in_batch = False
        else:
            for raw in frames:
                await p._on_frame(feed, raw, recv)
        for symbol in symbols:
            p.get_live_data(symbol)
        return p

    return asyncio.run(go())
