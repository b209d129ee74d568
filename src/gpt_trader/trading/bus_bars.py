"""Closed bars for the live session, read from the bus through a consumer group and acknowledged only once the
session has committed them.

The real-time pipeline publishes every bar revision on `bars:<timeframe>:<SYM>`. The session reads them as the
consumer `consumer` of the group `group`: provisional revisions are acknowledged at once (the session trades final
bars only); a final bar stays pending until `ack` after the session's state commit. With Redis Streams a session
killed between the two finds those bars again in its pending list on restart (`pending`), and the state store's
last processed bar id makes replaying them a no-op, so no bar is lost and none is traded twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gpt_trader.core.types import Bar
from gpt_trader.realtime.bars import LiveBar
from gpt_trader.realtime.bus import Bus, Entry


@dataclass(frozen=True, slots=True)
class BusBar:
    """A final bar and the bus entry it came in (to acknowledge after the commit)."""

    stream: str
    entry_id: str
    bar: LiveBar

    def to_bar(self) -> Bar:
        """As the core `Bar` the session trades."""
        return self.bar.to_bar()


class BusBarReader:
    """Final `timeframe` bars of `symbols` from `bus`, for the consumer `consumer` of `group`."""

    def __init__(
        self, bus: Bus, symbols: Sequence[str], timeframe: str, *, group: str, consumer: str = "session"
    ) -> None:
        self.bus, self.group, self.consumer = bus, group, consumer
        self.timeframe = timeframe
        self.streams = [f"bars:{timeframe}:{s}" for s in symbols]
        self.read_entries = 0

    async def start(self, *, fresh: bool = False) -> None:
        """Create the group on every stream (from its first entry); `fresh` drops the streams first."""
        if fresh:
            await self.bus.delete(*self.streams)
        for stream in self.streams:
            await self.bus.ensure_group(stream, self.group, "0")

    async def pending(self) -> list[BusBar]:
        """Final bars delivered to this consumer before and never acknowledged (a crash before the commit)."""
        entries: list[Entry] = []
        for stream in self.streams:
            entries += await self.bus.read_pending(self.group, self.consumer, stream, count=10_000)
        return await self._final(entries)

    async def read(self, block_ms: int = 200, count: int = 500) -> list[BusBar]:
        """New final bars (waits up to `block_ms` when there are none)."""
        entries = await self.bus.read_group(self.group, self.consumer, self.streams, count=count, block_ms=block_ms)
        return await self._final(entries)

    async def ack(self, bars: Sequence[BusBar]) -> None:
        """Acknowledge bars the session has committed."""
        by_stream: dict[str, list[str]] = {}
        for b in bars:
            by_stream.setdefault(b.stream, []).append(b.entry_id)
        for stream, ids in by_stream.items():
            await self.bus.ack(stream, self.group, ids)

    async def backlog(self) -> int:
        """Entries delivered to the group and not yet acknowledged, all streams."""
        total = 0
        for stream in self.streams:
            total += await self.bus.pending_count(stream, self.group)
        return total

    async def _final(self, entries: list[Entry]) -> list[BusBar]:
        self.read_entries += len(entries)
        out: list[BusBar] = []
        provisional: dict[str, list[str]] = {}
        for stream, entry_id, fields in entries:
            bar = LiveBar.from_fields(fields)
            if bar.final and bar.timeframe == self.timeframe:
                out.append(BusBar(stream, entry_id, bar))
            else:  # nothing to commit for it: acknowledged straight away
                provisional.setdefault(stream, []).append(entry_id)
        for stream, ids in provisional.items():
            await self.bus.ack(stream, self.group, ids)
        return out
