"""The message bus behind one interface: Redis Streams in production, an in-process twin for embedded use.

Both give the same semantics: append with a bounded length (`MAXLEN ~`), consumer groups with per-consumer pending
lists, acknowledgements, and claiming of entries a crashed consumer left pending (`XAUTOCLAIM`). Stream names are
`<prefix><name>` so tests and deployments share a Redis without colliding.

Field values are bytes, str, int or float (what Redis stores); both buses refuse anything else, and empty entries,
before a single entry is sent, with an error naming the stream and field.

Each entry is written once. A write whose reply was lost (Redis hung past the socket timeout, the connection dropped
mid-pipeline, or shut down after running it) is sent again by the caller, and the Redis bus makes that idempotent:
it names every entry's ID itself (`<ms>-<seq>`, increasing per stream, above the top it finds on first use) and
keeps an entry's ID until its write is confirmed, so a resent entry that went in the first time meets Redis' own
refusal of an ID not above the stream's top; the bus then reads that ID back and, finding the entry there with the
same fields, or finding the stream trimmed past it since, counts it as written (`stats.duplicates_suppressed`)
instead of adding it twice. An ID refused otherwise (another writer moved the stream's top past it) takes a fresh
one above the top, and goes in after what is there. The bus is meant to be a stream's one writer: with another,
entries stay unduplicated but a resend may land after newer ones, and one of ours gone from below a trimmed stream
is taken as written. Reading stays at least once: a consumer that crashes before its ack sees the entry again, so
consumers must tolerate repeats. What Redis loses is reported, never silent:
pending entries trimmed by `MAXLEN ~` before their ack are acknowledged and counted in `stats.trimmed_unacked`; a
consumer group that vanished (the stream was deleted) is recreated on the next read and counted in
`stats.groups_recreated`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from gpt_trader.core.errors import GptTraderError

Fields = Mapping[str, Any]
T = TypeVar("T")
Entry = tuple[str, str, dict[str, Any]]  # (stream, id, fields)

log = logging.getLogger(__name__)
_PLAIN = frozenset({bytes, str, int, float})  # exact types Redis stores as they are (bool is not among them)


class BusFieldError(GptTraderError, ValueError):
    """An entry's fields cannot be written to the bus; names the stream and the field."""


class PublishError(GptTraderError):
    """Some entries of a publish were not written. `retry`: refused for a passing reason (Redis out of memory,
    loading, read-only replica), worth sending again in order; `rejected`: (stream, fields, reason) refused for
    good (the key holds another type); `written`: how many went in. Entries in neither list were written once."""

    def __init__(
        self,
        written: int,
        retry: dict[str, list[Fields]],
        rejected: list[tuple[str, Fields, str]],
        first_error: str,
    ) -> None:
        self.written, self.retry, self.rejected = written, retry, rejected
        n_retry = sum(len(v) for v in retry.values())
        super().__init__(
            f"bus publish: {written} entries written, {n_retry} to retry, {len(rejected)} rejected; "
            f"first error: {first_error}"
        )


@dataclass
class BusStats:
    """What a bus lost or repaired, for health reports (counts since construction)."""

    groups_recreated: int = 0  # consumer groups found missing and created again (their pending entries are lost)
    trimmed_unacked: int = 0  # pending entries trimmed away before their ack (acknowledged, never delivered)
    skipped_by_trim: int = 0  # in-process only: entries trimmed before a lagging group read them
    duplicates_suppressed: int = 0  # Redis only: resent entries found written already (their first reply was lost)


def check_fields(stream: str, fields: Fields) -> None:
    """Raise `BusFieldError` unless `fields` is a non-empty mapping of str names to bytes/str/int/float values."""
    if not fields:
        raise BusFieldError(f"bus entry for stream {stream!r} has no fields (Redis refuses empty entries)")
    for name, value in fields.items():
        if type(value) not in _PLAIN and (isinstance(value, bool) or not isinstance(value, (bytes, str, int, float))):
            raise BusFieldError(
                f"bus entry for stream {stream!r}: field {name!r} is {type(value).__name__} ({value!r:.80}); "
                "encode it as bytes, str, int or float"
            )
        if type(name) is not str:
            raise BusFieldError(f"bus entry for stream {stream!r}: field name {name!r} is not a str")


def check_batches(batches: Mapping[str, Sequence[Fields]]) -> None:
    """`check_fields` on every entry of every stream."""
    for stream, entries in batches.items():
        for fields in entries:
            check_fields(stream, fields)


class Bus(Protocol):
    """Append-only streams with consumer groups."""

    prefix: str
    url: str  # where the bus lives, for logs (no secrets)
    stats: BusStats

    async def publish(self, batches: Mapping[str, Sequence[Fields]]) -> int:
        """Append entries to streams in one round trip; returns how many were written. Raises `BusFieldError`
        (nothing sent) for fields the bus cannot store, `PublishError` when only some entries were written."""
        ...

    async def ensure_group(self, stream: str, group: str, start_id: str = "0") -> None:
        """Create `group` on `stream` (and the stream) if missing."""
        ...

    async def read_group(
        self, group: str, consumer: str, streams: Sequence[str], count: int = 100, block_ms: int = 100
    ) -> list[Entry]:
        """New entries for `consumer` in `group` (they stay pending until acked); waits up to `block_ms` (0: not
        at all) when there are none. A missing group is recreated from the stream's start (and counted)."""
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


def _report_recreated(bus: Bus, stream: str, group: str) -> None:
    bus.stats.groups_recreated += 1
    log.error(
        "bus %s: consumer group %r on stream %r was missing (stream deleted or expired) and was recreated from the "
        "stream's start; entries it had pending are lost",
        bus.url, group, bus.prefix + stream,
    )  # fmt: skip


def _report_trimmed(bus: Bus, stream: str, group: str, n: int) -> None:
    bus.stats.trimmed_unacked += n
    log.warning(
        "bus %s: %d entries pending in group %r on stream %r were trimmed (MAXLEN) before their ack; acknowledged "
        "them, they were never processed (raise the bus maxlen or consume faster)",
        bus.url, n, group, bus.prefix + stream,
    )  # fmt: skip


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
        self.url = "memory://"
        self.stats = BusStats()
        self._streams: dict[str, _Stream] = {}
        self._new_data = asyncio.Event()

    def _stream(self, name: str) -> _Stream:
        key = self.prefix + name
        s = self._streams.get(key)
        if s is None:
            s = self._streams[key] = _Stream()
        return s

    def _group(self, name: str, group: str) -> _Group:
        """The group, recreated from the stream's start when it is gone (as `RedisStreamsBus` does on NOGROUP)."""
        s = self._stream(name)
        g = s.groups.get(group)
        if g is None:
            g = s.groups[group] = _Group(s.base)
            _report_recreated(self, name, group)
        return g

    def _next_id(self, s: _Stream) -> str:
        ms = time.time_ns() // 1_000_000
        if ms > s.last_ms:
            s.last_ms, s.seq = ms, 0
        else:
            s.seq += 1
        return f"{s.last_ms}-{s.seq}"

    async def publish(self, batches: Mapping[str, Sequence[Fields]]) -> int:
        """Append; trims the oldest entries beyond `maxlen` (exactly, where Redis trims approximately)."""
        check_batches(batches)
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
            g = self._group(name, group)
            if g.next_index < s.base:  # trimmed before this group read them: Redis skips them silently, we count
                skipped = s.base - g.next_index
                self.stats.skipped_by_trim += skipped
                log.warning(
                    "bus %s: group %r on stream %r fell behind trimming; %d entries were trimmed unread",
                    self.url, group, self.prefix + name, skipped,
                )  # fmt: skip
                g.next_index = s.base
            pos = g.next_index - s.base
            batch = list(s.entries)[pos : pos + count] if pos < len(s.entries) else []
            for entry_id, fields in batch:
                g.pending[entry_id] = _Pending(consumer, now, 1)
                out.append((name, entry_id, fields))
            g.next_index += len(batch)
        return out

    async def read_pending(self, group: str, consumer: str, stream: str, count: int = 100) -> list[Entry]:
        """This consumer's unacked entries; those trimmed meanwhile are acknowledged and counted."""
        s = self._stream(stream)
        g = self._group(stream, group)
        lookup = dict(s.entries)
        mine = [i for i, p in g.pending.items() if p.consumer == consumer]
        gone = [i for i in mine if i not in lookup]
        for i in gone:
            del g.pending[i]
        if gone:
            _report_trimmed(self, stream, group, len(gone))
        return [(stream, i, lookup[i]) for i in mine if i in lookup][:count]

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Remove from the group's pending list (0 for a missing group, as XACK)."""
        s = self._streams.get(self.prefix + stream)
        g = s.groups.get(group) if s is not None else None
        return 0 if g is None else sum(1 for i in ids if g.pending.pop(i, None) is not None)

    async def claim_stale(
        self, stream: str, group: str, consumer: str, min_idle_ms: int, count: int = 100
    ) -> list[Entry]:
        """XAUTOCLAIM: entries idle at least `min_idle_ms` move to `consumer`; trimmed ones are dropped (counted)."""
        s = self._stream(stream)
        g = self._group(stream, group)
        lookup = dict(s.entries)
        now = time.monotonic_ns()
        out: list[Entry] = []
        gone = 0
        for entry_id, p in list(g.pending.items()):
            if len(out) >= count:
                break
            if now - p.delivered_ns < min_idle_ms * 1_000_000:
                continue
            if entry_id not in lookup:
                del g.pending[entry_id]  # deleted by trimming, as Redis 7 reports and drops them
                gone += 1
                continue
            g.pending[entry_id] = _Pending(consumer, now, p.deliveries + 1)
            out.append((stream, entry_id, lookup[entry_id]))
        if gone:
            _report_trimmed(self, stream, group, gone)
        return out

    async def pending_count(self, stream: str, group: str) -> int:
        """Size of the group's pending list."""
        return len(self._group(stream, group).pending)

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


# Retention by TTL only for streams nobody consumes through a group: expiring a grouped stream would delete the group
# with its unacknowledged entries (a stopped live session would lose the bars it must find again on restart). Those
# streams are bounded by MAXLEN alone. One script so the check and the EXPIRE/PERSIST are atomic.
_EXPIRE_UNLESS_GROUPS = (
    "if #redis.call('XINFO', 'GROUPS', KEYS[1]) == 0 then return redis.call('EXPIRE', KEYS[1], ARGV[1]) "
    "else return redis.call('PERSIST', KEYS[1]) end"
)
# XADD's refusal of an ID not above the stream's top (Redis' wording since 5.0).
_NOT_ABOVE_TOP = "equal or smaller than the target stream top item"
# Rounds of fresh IDs for entries whose IDs another writer overtook, within one publish.
_ID_ROUNDS = 3
# Error replies that describe the server's state, not the entry: the same XADD can succeed later.
_TRANSIENT_CODES = ("BUSY", "MISCONF", "NOREPLICAS", "LOADING", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN")


def _is_transient(exc: BaseException) -> bool:
    from redis import exceptions as rex

    if isinstance(exc, (rex.ConnectionError, rex.TimeoutError, OSError)):
        return True
    if isinstance(exc, (rex.OutOfMemoryError, rex.ReadOnlyError, rex.TryAgainError, rex.MasterDownError)):
        return True
    # An ID another writer kept overtaking (`_settle` gave up): the entry is not in, and a later publish names it anew.
    return str(exc).startswith(_TRANSIENT_CODES) or _NOT_ABOVE_TOP in str(exc)


def _is_nogroup(exc: BaseException) -> bool:
    return str(exc).startswith("NOGROUP")


def _parse_id(entry_id: Any) -> tuple[int, int]:
    ms, _, seq = _text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def _safe_url(pool: Any) -> str:
    """The connection pool's address without the password, for logs."""
    kwargs = pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    scheme = "rediss" if "SSL" in pool.connection_class.__name__ else "redis"
    user = f"{kwargs['username']}@" if kwargs.get("username") else ""
    return f"{scheme}://{user}{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


@dataclass(slots=True)
class _Sent:
    """One XADD of a publish: the stream key, the entry, which listing of its object it is, and its ID."""

    key: str
    fields: Fields
    k: int
    entry_id: str


def _trimmed_past(info: Any, entry_id: str) -> bool:
    """Whether the stream (XINFO STREAM's reply) no longer holds anything at or below `entry_id`: its entries up to
    there were trimmed (or deleted) since."""
    if not isinstance(info, dict):
        return False
    first = info.get("first-entry")
    if first is None:  # empty: trimmed or deleted to nothing
        return _parse_id(info["last-generated-id"]) >= _parse_id(entry_id)
    return _parse_id(first[0]) > _parse_id(entry_id)


class RedisStreamsBus:
    """Redis Streams via redis-py asyncio: pipelined `XADD ... MAXLEN ~`, groups, `XACK`, `XAUTOCLAIM`.

    `ttl_secs` expires streams left idle that long, except streams with consumer groups (see `_EXPIRE_UNLESS_GROUPS`).
    """

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
        from redis.asyncio.connection import DEFAULT_SOCKET_TIMEOUT

        # Bytes on the wire: tick batches are orjson bytes and decoding every reply would cost more than it saves.
        self._redis = client if client is not None else aioredis.Redis.from_url(url, decode_responses=False)
        self.maxlen = maxlen
        self.prefix = prefix
        self.ttl_secs = ttl_secs
        self.stats = BusStats()
        kwargs = self._redis.connection_pool.connection_kwargs
        self.url = _safe_url(self._redis.connection_pool)
        # A blocking XREADGROUP longer than the socket timeout would fail as a timeout: block in slices below it.
        timeout = kwargs.get("socket_timeout", DEFAULT_SOCKET_TIMEOUT)
        # Half the timeout: the reply of a block that ends must still arrive within it on a loaded machine (at 0.8
        # of a 0.5 s timeout, a busy event loop read it late and the read failed as a timeout in CI).
        self._max_block_ms = max(1, int(timeout * 500)) if timeout else None
        self._expiry_set: dict[str, float] = {}
        self._top: dict[str, tuple[int, int]] = {}  # per stream key: the highest entry ID known there (ours or not)
        # Entries sent whose outcome is unknown (no reply: error, timeout, cancellation), by object identity: a
        # resend of the same entry (the pipeline requeues the very objects) reuses its ID.
        self._unsure: dict[int, tuple[Fields, list[str]]] = {}

    def __repr__(self) -> str:
        return f"RedisStreamsBus(url={self.url!r}, prefix={self.prefix!r}, maxlen={self.maxlen})"

    async def ping(self) -> bool:
        """True when Redis answers."""
        return bool(await self._redis.ping())

    async def publish(self, batches: Mapping[str, Sequence[Fields]]) -> int:
        """One pipelined round trip for every entry of every stream (approximate trimming keeps XADD O(1)), each
        under an ID this bus names (see the module: resending an entry whose reply was lost adds nothing). An entry
        is known by its object and, for one object listed several times, by which of them it is: a resend passes
        the same objects in the same order (the pipeline requeues them as they were).

        Per-entry errors do not stop the others; see `PublishError` for what is then written, to retry or refused.
        """
        check_batches(batches)
        streams = [(name, entries) for name, entries in batches.items() if entries]
        if not streams:
            return 0
        await self._learn_tops([self.prefix + name for name, _ in streams])
        now = time.monotonic()
        now_ms = time.time_ns() // 1_000_000
        layout: list[tuple[str, Sequence[Fields], bool]] = []  # per stream: its entries, then maybe the TTL command
        sent: list[_Sent] = []  # per XADD, in order
        seen: dict[int, int] = {}  # occurrences of each object so far in this call
        async with self._redis.pipeline(transaction=False) as pipe:
            for name, entries in streams:
                key = self.prefix + name
                for fields in entries:
                    k = seen[id(fields)] = seen.get(id(fields), -1) + 1
                    item = _Sent(key, fields, k, self._id_for(key, fields, k, now_ms))
                    pipe.xadd(key, dict(fields), id=item.entry_id, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
                    sent.append(item)
                # Refresh the TTL now and then, not per entry: it is a retention bound, not a precise clock.
                ttl = bool(self.ttl_secs) and now - self._expiry_set.get(key, -1e18) > (self.ttl_secs or 0) / 4
                if ttl:
                    pipe.eval(_EXPIRE_UNLESS_GROUPS, 1, key, self.ttl_secs)  # type: ignore[arg-type]
                    self._expiry_set[key] = now
                layout.append((name, entries, ttl))
            # Until this call has every reply, each entry may or may not be in: a resend (after an exception here,
            # the caller's) reuses its ID.
            self._hold(sent)
            results = await pipe.execute(raise_on_error=False)
        kinds = [k for _, entries, ttl in layout for k in [*([True] * len(entries)), *([False] if ttl else [])]]
        xadds = await self._settle(sent, [r for r, kind in zip(results, kinds, strict=True) if kind])
        for item in sent:  # each written or refused, for sure: a resend is a new entry
            self._unsure.pop(id(item.fields), None)
        if any(isinstance(r, Exception) for r in xadds):
            it = iter(xadds)
            self._raise_partial(layout, [next(it) if kind else r for r, kind in zip(results, kinds, strict=True)])
        return len(sent)

    def _hold(self, sent: list[_Sent]) -> None:
        """Remember each entry's ID, by object and occurrence, until its outcome is known."""
        for item in sent:
            held = self._unsure.get(id(item.fields))
            ids = held[1] if held is not None and held[0] is item.fields else []
            ids[item.k : item.k + 1] = [item.entry_id]
            self._unsure[id(item.fields)] = (item.fields, ids)

    def _id_for(self, key: str, fields: Fields, k: int, now_ms: int) -> str:
        """The ID of an entry (the `k`-th listing of its object) resent after an unknown outcome, else the next one
        above the stream's top."""
        held = self._unsure.get(id(fields))
        if held is not None and held[0] is fields and k < len(held[1]):
            return held[1][k]
        top_ms, top_seq = self._top.get(key, (0, 0))
        ms, seq = (now_ms, 0) if now_ms > top_ms else (top_ms, top_seq + 1)
        self._top[key] = (ms, seq)
        return f"{ms}-{seq}"

    def _learn_top(self, key: str, info: Any) -> None:
        if isinstance(info, dict):
            self._top[key] = max(self._top.get(key, (0, 0)), _parse_id(info["last-generated-id"]))

    async def _learn_tops(self, keys: list[str]) -> None:
        """The current top ID of each stream not seen yet (a restarted writer continues above what is there)."""
        unknown = [k for k in dict.fromkeys(keys) if k not in self._top]
        if not unknown:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in unknown:
                pipe.xinfo_stream(key)
            infos = await pipe.execute(raise_on_error=False)
        for key, info in zip(unknown, infos, strict=True):
            if isinstance(info, Exception) and _is_transient(info):
                raise info  # Redis failing for now: the caller retries the whole publish
            self._learn_top(key, info)  # no such key yet, or another type (its XADDs are refused with the reason)
            self._top.setdefault(key, (0, 0))

    def _is_ours(self, found: Any, fields: Fields) -> bool:
        """Whether XRANGE's reply for one ID holds exactly `fields` (encoded as the client encodes them)."""
        if not isinstance(found, list) or not found:
            return False
        encode = self._redis.connection_pool.get_encoder().encode
        stored = {encode(k): encode(v) for k, v in found[0][1].items()}  # bytes, whatever the client decodes
        return stored == {encode(k): encode(v) for k, v in fields.items()}

    async def _settle(self, sent: list[_Sent], results: list[Any]) -> list[Any]:
        """Resolve XADDs refused because their ID was not above the stream's top. Found under its ID with the same
        fields, or gone from below the stream's first entry (trimmed since; this bus is taken as the stream's one
        writer, whose IDs only pass an entry it has written), the entry was written by an earlier attempt whose
        reply was lost: counted, not added again. Any other takes a fresh ID above the top and is sent again (a
        few rounds; then it is left to the caller, to retry)."""
        results = list(results)
        for _ in range(_ID_ROUNDS):
            refused = [i for i, r in enumerate(results) if isinstance(r, Exception) and _NOT_ABOVE_TOP in str(r)]
            if not refused:
                break
            keys = list(dict.fromkeys(sent[i].key for i in refused))
            async with self._redis.pipeline(transaction=False) as pipe:
                for i in refused:
                    pipe.xrange(sent[i].key, sent[i].entry_id, sent[i].entry_id)
                for key in keys:
                    pipe.xinfo_stream(key)
                replies = await pipe.execute(raise_on_error=False)
            stored, infos = replies[: len(refused)], dict(zip(keys, replies[len(refused) :], strict=True))
            for key, info in infos.items():
                self._learn_top(key, info)
            again: list[int] = []
            for i, found in zip(refused, stored, strict=True):
                item = sent[i]
                if self._is_ours(found, item.fields) or _trimmed_past(infos[item.key], item.entry_id):
                    results[i] = item.entry_id  # written by the attempt whose reply was lost
                    self.stats.duplicates_suppressed += 1
                    continue
                again.append(i)
            if not again:
                break
            now_ms = time.time_ns() // 1_000_000
            async with self._redis.pipeline(transaction=False) as pipe:
                for i in again:  # not in under that ID: a fresh one
                    item = sent[i]
                    self._unsure.pop(id(item.fields), None)
                    item.entry_id = self._id_for(item.key, item.fields, item.k, now_ms)
                    pipe.xadd(item.key, dict(item.fields), id=item.entry_id, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
                self._hold(sent)
                for i, r in zip(again, await pipe.execute(raise_on_error=False), strict=True):
                    results[i] = r
        return results

    def _raise_partial(self, layout: list[tuple[str, Sequence[Fields], bool]], results: list[Any]) -> None:
        """Sort the failed XADDs into retry (transient) and rejected (permanent); raise `PublishError`."""
        retry: dict[str, list[Fields]] = {}
        rejected: list[tuple[str, Fields, str]] = []
        written, first, i = 0, "", 0
        for name, entries, ttl in layout:
            for fields in entries:
                r = results[i]
                i += 1
                if not isinstance(r, Exception):
                    written += 1
                    continue
                first = first or f"{type(r).__name__}: {r} (stream {self.prefix + name!r})"
                if _is_transient(r):
                    retry.setdefault(name, []).append(fields)
                else:
                    rejected.append((name, fields, f"{type(r).__name__}: {r}"))
            if ttl:
                i += 1  # a failed TTL refresh loses nothing; a later one sets it
        if retry or rejected:
            raise PublishError(written, retry, rejected, first)

    async def _create_group(self, stream: str, group: str, start_id: str) -> bool:
        """XGROUP CREATE ... MKSTREAM, then PERSIST (a grouped stream must not expire); False when it existed."""
        from redis.exceptions import ResponseError

        key = self.prefix + stream
        try:
            await self._redis.xgroup_create(key, group, id=start_id, mkstream=True)
            created = True
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            created = False
        await self._redis.persist(key)
        return created

    async def ensure_group(self, stream: str, group: str, start_id: str = "0") -> None:
        """XGROUP CREATE ... MKSTREAM, tolerating BUSYGROUP; removes any TTL from the stream."""
        await self._create_group(stream, group, start_id)

    async def _or_recreated(self, call: Awaitable[T], streams: Sequence[str], group: str) -> T | None:
        """`await call`; None when the group is missing (NOGROUP: the stream was deleted or expired), after
        recreating it from each stream's start and reporting it."""
        from redis.exceptions import ResponseError

        try:
            return await call
        except ResponseError as exc:
            if not _is_nogroup(exc):
                raise
        for stream in streams:
            if await self._create_group(stream, group, "0"):
                _report_recreated(self, stream, group)
        return None

    def _entries(self, resp: Any) -> list[Entry]:
        out: list[Entry] = []
        n = len(self.prefix)
        for stream, entries in resp or []:
            name = _text(stream)[n:]
            for entry_id, fields in entries:
                out.append((name, _text(entry_id), {_text(k): v for k, v in (fields or {}).items()}))
        return out

    async def read_group(
        self, group: str, consumer: str, streams: Sequence[str], count: int = 100, block_ms: int = 100
    ) -> list[Entry]:
        """XREADGROUP with `>`; a missing group (NOGROUP) is recreated from the stream's start and reported."""
        got = await self._or_recreated(self._read_new(group, consumer, streams, count, block_ms), streams, group)
        return got if got is not None else await self._read_new(group, consumer, streams, count, block_ms)

    async def _read_new(
        self, group: str, consumer: str, streams: Sequence[str], count: int, block_ms: int
    ) -> list[Entry]:
        keys = {self.prefix + s: ">" for s in streams}
        deadline = time.monotonic() + block_ms / 1000
        while True:
            # BLOCK 0 would wait forever: 0 means "don't wait", as in InProcessBus.
            left_ms = int((deadline - time.monotonic()) * 1000)
            block = (
                None if left_ms <= 0 else left_ms if self._max_block_ms is None else min(left_ms, self._max_block_ms)
            )
            resp = await self._redis.xreadgroup(group, consumer, keys, count=count, block=block)  # type: ignore[arg-type]
            if resp or block is None or block == left_ms:
                return self._entries(resp)

    async def read_pending(self, group: str, consumer: str, stream: str, count: int = 100) -> list[Entry]:
        """XREADGROUP with `0`: this consumer's own pending entries; those trimmed meanwhile (no fields) are
        acknowledged and counted, so they stop haunting the pending list."""
        resp = await self._or_recreated(
            self._redis.xreadgroup(group, consumer, {self.prefix + stream: "0"}, count=count), [stream], group
        )
        entries = self._entries(resp)  # none for a recreated group
        gone = [e[1] for e in entries if not e[2]]
        if gone:
            await self._redis.xack(self.prefix + stream, group, *gone)
            _report_trimmed(self, stream, group, len(gone))
        return [e for e in entries if e[2]]

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """XACK."""
        return int(await self._redis.xack(self.prefix + stream, group, *ids)) if ids else 0

    async def claim_stale(
        self, stream: str, group: str, consumer: str, min_idle_ms: int, count: int = 100
    ) -> list[Entry]:
        """XAUTOCLAIM from 0-0 until the cursor wraps (bounded to 1000 rounds). Entries trimmed while pending are
        dropped from the pending list (by Redis 7; acknowledged here on Redis 6.2) and counted."""
        key = self.prefix + stream
        start: Any = "0-0"
        out: list[Entry] = []
        gone = 0
        for _ in range(1000):
            reply = await self._or_recreated(
                self._redis.xautoclaim(key, group, consumer, min_idle_time=min_idle_ms, start_id=start, count=count),
                [stream],
                group,
            )
            if reply is None:  # the group was recreated: nothing pending
                break
            start, claimed = reply[0], reply[1]
            gone += len(reply[2]) if len(reply) > 2 else 0  # Redis 7: ids deleted from the stream, now unpending
            trimmed = [i for i, f in claimed if not f]  # Redis 6.2: they come back with no fields, still pending
            if trimmed:
                await self._redis.xack(key, group, *trimmed)
                gone += len(trimmed)
            out.extend((stream, _text(i), {_text(k): v for k, v in f.items()}) for i, f in claimed if f)
            if _text(start) == "0-0" or len(out) >= count:
                break
        if gone:
            _report_trimmed(self, stream, group, gone)
        return out

    async def pending_count(self, stream: str, group: str) -> int:
        """XPENDING summary count (0 for a group that had to be recreated)."""
        info = await self._or_recreated(self._redis.xpending(self.prefix + stream, group), [stream], group)
        return 0 if info is None else int(info["pending"])

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
        self._unsure.clear()
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
