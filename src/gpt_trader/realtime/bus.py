"""The message bus behind one interface: Redis Streams in production, an in-process twin for embedded use.

Both give the same semantics: append with a bounded length (`MAXLEN ~`), consumer groups with per-consumer pending
lists, acknowledgements, and claiming of entries a crashed consumer left pending (`XAUTOCLAIM`). Stream names are
`<prefix><name>` so tests and deployments share a Redis without colliding.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Fields = Mapping[str, Any]
Entry = tuple[str, str, dict[str, Any]]  # (stream, id, fields)


class Bus(Protocol):
    """Append-only streams with consumer groups."""

    prefix: str

    async def publish(self, batches: Mapping[str, Sequence[Fields]]) -> int:
        """Append entries to streams in one round trip; returns how many were written."""
        ...

    async def ensure_group(self, stream: str, group: str, start_id: str = "0") -> None:
        """Create `group` on `stream` (and the stream) if missing."""
        ...

    async def read_group(
        self, group: str, consumer: str, streams: Sequence[str], count: int = 100, block_ms: int = 100
    ) -> list[Entry]:
        """New entries for `consumer` in `group` (they stay pending until acked)."""
        ...

    async def read_pending(self, group: str, consumer: str, stream: str, count: int = 100) -> list[Entry]:
        """Entries already delivered to `consumer` and not acked (drain these first after a restart)."""
        ...

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Acknowledge processed entries."""
        ...

    async def claim_stale(
        self, stream: str, group: str, consumer: str, min_idle_ms: int, count: int = 100
    ) -> list[Entry]:
        """Take over entries pending longer than `min_idle_ms` on other (crashed) consumers."""
        ...

    async def pending_count(self, stream: str, group: str) -> int:
        """Entries delivered and not yet acked, all consumers."""
        ...

    async def read_range(self, stream: str, count: int | None = None) -> list[tuple[str, dict[str, Any]]]:
        """All (or the first `count`) entries of a stream, oldest first."""
        ...

    async def length(self, stream: str) -> int:
        """Entries currently in a stream."""
        ...

    async def delete(self, *streams: str) -> None:
        """Remove streams."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


# --- in-process -----------------------------------------------------------------------------------------------
@dataclass
class _Pending:
    consumer: str
    delivered_ns: int
    deliveries: int


@dataclass
class _Group:
    next_index: int  # global index of the next undelivered entry
    pending: dict[str, _Pending] = field(default_factory=dict)


@dataclass
class _Stream:
    entries: deque[tuple[str, dict[str, Any]]] = field(default_factory=deque)
    base: int = 0  # global index of entries[0]
    seq: int = 0
    last_ms: int = 0
    groups: dict[str, _Group] = field(default_factory=dict)


class InProcessBus:
    """Redis-Streams-like bus in memory: bounded streams, groups, pending lists, claiming. Single event loop."""

    def __init__(self, maxlen: int = 100_000, prefix: str = "") -> None:
        self.maxlen = maxlen
        self.prefix = prefix
        self._streams: dict[str, _Stream] = {}
        self._new_data = asyncio.Event()

    def _stream(self, name: str) -> _Stream:
        key = self.prefix + name
        s = self._streams.get(key)
        if s is None:
            s = self._streams[key] = _Stream()
        return s

    def _next_id(self, s: _Stream) -> str:
        ms = time.time_ns() // 1_000_000
        if ms > s.last_ms:
            s.last_ms, s.seq = ms, 0
        else:
            s.seq += 1
        return f"{s.last_ms}-{s.seq}"

    async def publish(self, batches: Mapping[str, Sequence[Fields]]) -> int:
        """Append; trims the oldest entries beyond `maxlen` (exactly, where Redis trims approximately)."""
        written = 0
        for name, entries in batches.items():
            s = self._stream(name)
            for fields in entries:
                s.entries.append((self._next_id(s), dict(fields)))
                written += 1
            while len(s.entries) > self.maxlen:
                s.entries.popleft()
                s.base += 1
        if written:
            self._new_data.set()
        return written

    async def ensure_group(self, stream: str, group: str, start_id: str = "0") -> None:
        """Create the group; `start_id` is "0" (from the start) or "$" (only new entries)."""
        s = self._stream(stream)
        if group not in s.groups:
            start = s.base + len(s.entries) if start_id == "$" else s.base
            s.groups[group] = _Group(start)

    async def read_group(
        self, group: str, consumer: str, streams: Sequence[str], count: int = 100, block_ms: int = 100
    ) -> list[Entry]:
        """Deliver up to `count` new entries per stream; waits up to `block_ms` when there are none."""
        deadline = time.monotonic() + block_ms / 1000
        while True:
            out = self._deliver(group, consumer, streams, count)
            remaining = deadline - time.monotonic()
            if out or remaining <= 0:
                return out
            self._new_data.clear()
            try:
                await asyncio.wait_for(self._new_data.wait(), remaining)
            except TimeoutError:
                return self._deliver(group, consumer, streams, count)

    def _deliver(self, group: str, consumer: str, streams: Sequence[str], count: int) -> list[Entry]:
        out: list[Entry] = []
        now = time.monotonic_ns()
        for name in streams:
            s = self._stream(name)
            g = s.groups.get(group)
            if g is None:
                raise KeyError(f"NOGROUP: no group {group!r} on stream {self.prefix + name!r}")
            g.next_index = max(g.next_index, s.base)
            pos = g.next_index - s.base
            batch = list(s.entries)[pos : pos + count] if pos < len(s.entries) else []
            for entry_id, fields in batch:
                g.pending[entry_id] = _Pending(consumer, now, 1)
                out.append((name, entry_id, fields))
            g.next_index += len(batch)
        return out

    async def read_pending(self, group: str, consumer: str, stream: str, count: int = 100) -> list[Entry]:
        """This consumer's unacked entries (still present in the stream)."""
        s = self._stream(stream)
        g = s.groups[group]
        lookup = dict(s.entries)
        ids = [i for i, p in g.pending.items() if p.consumer == consumer and i in lookup][:count]
        return [(stream, i, lookup[i]) for i in ids]

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Remove from the group's pending list."""
        g = self._stream(stream).groups[group]
        return sum(1 for i in ids if g.pending.pop(i, None) is not None)

    async def claim_stale(
        self, stream: str, group: str, consumer: str, min_idle_ms: int, count: int = 100
    ) -> list[Entry]:
        """XAUTOCLAIM: entries idle at least `min_idle_ms` move to `consumer`; trimmed ones are dropped."""
        s = self._stream(stream)
        g = s.groups[group]
        lookup = dict(s.entries)
        now = time.monotonic_ns()
        out: list[Entry] = []
        for entry_id, p in list(g.pending.items()):
            if len(out) >= count:
                break
            if now - p.delivered_ns < min_idle_ms * 1_000_000:
                continue
            if entry_id not in lookup:
                del g.pending[entry_id]  # deleted by trimming, as Redis 7 reports and drops them
                continue
            g.pending[entry_id] = _Pending(consumer, now, p.deliveries + 1)
            out.append((stream, entry_id, lookup[entry_id]))
        return out

    async def pending_count(self, stream: str, group: str) -> int:
        """Size of the group's pending list."""
        return len(self._stream(stream).groups[group].pending)

    async def read_range(self, stream: str, count: int | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Entries oldest first."""
        entries = list(self._stream(stream).entries)
        return entries if count is None else entries[:count]

    async def length(self, stream: str) -> int:
        """Entries held."""
        return len(self._stream(stream).entries)

    async def delete(self, *streams: str) -> None:
        """Forget streams."""
        for name in streams:
            self._streams.pop(self.prefix + name, None)

    async def close(self) -> None:
        """Nothing to release."""
        return None


# --- Redis Streams ----------------------------------------------------------------------------------------------
def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisStreamsBus:
    """Redis Streams via redis-py asyncio: pipelined `XADD ... MAXLEN ~`, groups, `XACK`, `XAUTOCLAIM`."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        maxlen: int = 100_000,
        prefix: str = "gpt_trader:",
        ttl_secs: int | None = None,
        client: Any | None = None,
    ) -> None:
        import redis.asyncio as aioredis

        # Bytes on the wire: tick batches are orjson bytes and decoding every reply would cost more than it saves.
        self._redis = client if client is not None else aioredis.Redis.from_url(url, decode_responses=False)
        self.maxlen = maxlen
        self.prefix = prefix
        self.ttl_secs = ttl_secs
        self._expiry_set: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"RedisStreamsBus(prefix={self.prefix!r}, maxlen={self.maxlen})"

    async def ping(self) -> bool:
        """True when Redis answers."""
        return bool(await self._redis.ping())

    async def publish(self, batches: Mapping[str, Sequence[Fields]]) -> int:
        """One pipelined round trip for every entry of every stream (approximate trimming keeps XADD O(1))."""
        written = 0
        now = time.monotonic()
        async with self._redis.pipeline(transaction=False) as pipe:
            for name, entries in batches.items():
                key = self.prefix + name
                for fields in entries:
                    pipe.xadd(key, dict(fields), maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
                    written += 1
                # Refresh the TTL now and then, not per entry: it is a retention bound, not a precise clock.
                if self.ttl_secs and entries and now - self._expiry_set.get(key, -1e18) > self.ttl_secs / 4:
                    pipe.expire(key, self.ttl_secs)
                    self._expiry_set[key] = now
            if written:
                await pipe.execute()
        return written

    async def ensure_group(self, stream: str, group: str, start_id: str = "0") -> None:
        """XGROUP CREATE ... MKSTREAM, tolerating BUSYGROUP."""
        from redis.exceptions import ResponseError

        try:
            await self._redis.xgroup_create(self.prefix + stream, group, id=start_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _entries(self, resp: Any) -> list[Entry]:
        out: list[Entry] = []
        n = len(self.prefix)
        for stream, entries in resp or []:
            name = _text(stream)[n:]
            for entry_id, fields in entries:
                out.append((name, _text(entry_id), {_text(k): v for k, v in fields.items()}))
        return out

    async def read_group(
        self, group: str, consumer: str, streams: Sequence[str], count: int = 100, block_ms: int = 100
    ) -> list[Entry]:
        """XREADGROUP with `>`."""
        resp = await self._redis.xreadgroup(
            group, consumer, {self.prefix + s: ">" for s in streams}, count=count, block=block_ms
        )
        return self._entries(resp)

    async def read_pending(self, group: str, consumer: str, stream: str, count: int = 100) -> list[Entry]:
        """XREADGROUP with `0`: this consumer's own pending entries."""
        resp = await self._redis.xreadgroup(group, consumer, {self.prefix + stream: "0"}, count=count)
        return [e for e in self._entries(resp) if e[2]]

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """XACK."""
        return int(await self._redis.xack(self.prefix + stream, group, *ids)) if ids else 0

    async def claim_stale(
        self, stream: str, group: str, consumer: str, min_idle_ms: int, count: int = 100
    ) -> list[Entry]:
        """XAUTOCLAIM from 0-0 until the cursor wraps (bounded to 1000 rounds)."""
        key = self.prefix + stream
        start: Any = "0-0"
        out: list[Entry] = []
        for _ in range(1000):
            reply = await self._redis.xautoclaim(
                key, group, consumer, min_idle_time=min_idle_ms, start_id=start, count=count
            )
            start, claimed = reply[0], reply[1]  # Redis 7 adds deleted ids as a third item
            out.extend((stream, _text(i), {_text(k): v for k, v in f.items()}) for i, f in claimed if f)
            if _text(start) == "0-0" or len(out) >= count:
                break
        return out

    async def pending_count(self, stream: str, group: str) -> int:
        """XPENDING summary count."""
        info = await self._redis.xpending(self.prefix + stream, group)
        return int(info["pending"])

    async def read_range(self, stream: str, count: int | None = None) -> list[tuple[str, dict[str, Any]]]:
        """XRANGE - +."""
        resp: Any = await self._redis.xrange(self.prefix + stream, "-", "+", count=count)
        return [(_text(i), {_text(k): v for k, v in f.items()}) for i, f in resp]

    async def length(self, stream: str) -> int:
        """XLEN."""
        return int(await self._redis.xlen(self.prefix + stream))

    async def delete(self, *streams: str) -> None:
        """DEL the streams."""
        if streams:
            await self._redis.delete(*(self.prefix + s for s in streams))

    async def delete_prefix(self) -> int:
        """Remove every key under this bus's prefix (test clean-up); returns how many."""
        keys = [k async for k in self._redis.scan_iter(match=self.prefix + "*", count=1000)]
        if keys:
            await self._redis.delete(*keys)
        return len(keys)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


# --- a consumer with crash recovery -----------------------------------------------------------------------------
async def consume(
    bus: Bus,
    stream: str,
    group: str,
    consumer: str,
    handle: Any,
    *,
    max_entries: int,
    timeout_secs: float,
    claim_idle_ms: int = 30_000,
    count: int = 100,
) -> int:
    """Process entries with at-least-once delivery: own pending first, then stale ones claimed from crashed
    consumers, then new ones; ack after `handle(fields)` returns. Bounded by entries and time; returns how many."""
    await bus.ensure_group(stream, group)
    done = 0
    deadline = time.monotonic() + timeout_secs

    async def run(entries: list[Entry]) -> None:
        nonlocal done
        for _, entry_id, fields in entries:
            result = handle(fields)
            if asyncio.iscoroutine(result):
                await result
            await bus.ack(stream, group, [entry_id])
            done += 1

    await run(await bus.read_pending(group, consumer, stream, count))
    await run(await bus.claim_stale(stream, group, consumer, claim_idle_ms, count))
    while done < max_entries and time.monotonic() < deadline:
        entries = await bus.read_group(group, consumer, [stream], count=min(count, max_entries - done), block_ms=50)
        await run(entries)
    return done
