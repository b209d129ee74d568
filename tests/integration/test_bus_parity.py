"""InProcessBus and RedisStreamsBus keep the same promises where Redis used to fail or lose things silently:
unstorable fields refused before anything is sent, `block_ms` meaning "wait up to" (0: not at all, and longer than
the socket timeout), a vanished consumer group recreated and counted, pending entries trimmed before their ack
acknowledged and counted. Redis is the real one on 127.0.0.1:6379, each test under its own key prefix."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from gpt_trader.realtime.bus import BusFieldError, InProcessBus, RedisStreamsBus, consume
from gpt_trader.trading.bus_bars import BusBarReader

pytestmark = pytest.mark.integration
URL = "redis://127.0.0.1:6379/0"
KINDS = ["memory", "redis"]


@asynccontextmanager
async def open_bus(kind: str, maxlen: int = 10_000, **redis: Any) -> AsyncIterator[Any]:
    """A fresh bus of `kind`; Redis ones live under a unique prefix, deleted afterwards (`redis`: its options)."""
    if kind == "memory":
        yield InProcessBus(maxlen=maxlen, prefix="t:")
        return
    bus = RedisStreamsBus(URL, maxlen=maxlen, prefix=f"test:{uuid.uuid4().hex[:12]}:", **redis)
    try:
        await bus.ping()
    except OSError as exc:  # pragma: no cover - only when Redis is down
        await bus.close()
        pytest.fail(f"Redis not reachable at {URL} ({exc}); start it with `make services` or redis-server")
    try:
        yield bus
    finally:
        await bus.delete_prefix()
        await bus.close()


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"a": None}, "field 'a' is NoneType"),
        ({"a": True}, "field 'a' is bool"),
        ({"a": {"x": 1}}, "field 'a' is dict"),
        ({}, "has no fields"),
        ({1: "x"}, "field name 1"),
    ],
    ids=["none", "bool", "dict", "empty", "int-name"],
)
def test_unstorable_fields_refused_before_anything_is_sent(kind: str, fields: dict[Any, Any], named: str) -> None:
    async def scenario() -> None:
        async with open_bus(kind) as bus:
            with pytest.raises(BusFieldError, match=re.escape(named)) as err:
                await bus.publish({"ok": [{"a": "1"}], "bad": [{"a": "1"}, fields]})
            assert "stream 'bad'" in str(err.value)
            assert await bus.length("ok") == 0  # nothing of the batch went out
            assert await bus.length("bad") == 0
            # what Redis stores as is goes through on both
            assert await bus.publish({"ok": [{"s": "x", "b": b"\x00", "i": 3, "f": 0.5}]}) == 1

    run(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_block_ms_zero_does_not_wait(kind: str) -> None:
    """Redis' BLOCK 0 waits forever; the interface's 0 means "don't wait", as InProcessBus always did."""

    async def scenario() -> None:
        async with open_bus(kind) as bus:
            await bus.ensure_group("e", "g", "$")
            assert await asyncio.wait_for(bus.read_group("g", "c", ["e"], block_ms=0), 3) == []

    run(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_block_longer_than_the_socket_timeout_returns_empty(kind: str) -> None:
    """A blocking read past redis-py's socket timeout (here 0.5 s) used to fail with TimeoutError."""

    async def scenario() -> None:
        import redis.asyncio as aioredis

        async with open_bus(kind, client=aioredis.Redis.from_url(URL, socket_timeout=0.5)) as bus:
            await bus.ensure_group("e", "g", "$")
            t0 = time.monotonic()
            assert await bus.read_group("g", "c", ["e"], block_ms=1200) == []
            assert time.monotonic() - t0 >= 1.1  # it did wait the whole block_ms
            reader = asyncio.create_task(bus.read_group("g", "c", ["e"], block_ms=3000))
            await asyncio.sleep(0.8)  # past one socket timeout
            await bus.publish({"e": [{"x": "1"}]})
            got = await asyncio.wait_for(reader, 5)
            assert [e[2]["x"] for e in got] in (["1"], [b"1"])

    run(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_vanished_group_is_recreated_and_counted(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """The stream deleted under a group (an expired TTL, a `fresh` start elsewhere): the next read recreates the
    group from the stream's start instead of failing with NOGROUP, and says what was lost."""

    async def scenario() -> None:
        async with open_bus(kind) as bus:
            await bus.ensure_group("s", "g")
            await bus.publish({"s": [{"i": "0"}, {"i": "1"}]})
            assert len(await bus.read_group("g", "a", ["s"])) == 2
            await bus.delete("s")
            await bus.publish({"s": [{"i": "2"}, {"i": "3"}]})
            got = await bus.read_group("g", "a", ["s"], block_ms=10)
            assert [_text(e[2]["i"]) for e in got] == ["2", "3"]
            assert bus.stats.groups_recreated == 1
            for call in (
                lambda: bus.read_pending("g", "a", "s"),
                lambda: bus.claim_stale("s", "g", "b", 0),
                lambda: bus.pending_count("s", "g"),
            ):
                await bus.delete("s")
                assert await call() in ([], 0)
            assert bus.stats.groups_recreated == 4
            assert await bus.ack("s", "nosuchgroup", ["1-1"]) == 0

    run(scenario)
    assert any("was missing" in r.getMessage() and "'g'" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kind", KINDS)
def test_live_session_reader_survives_a_vanished_group(kind: str) -> None:
    """BusBarReader.read (the live session's loop) used to end the session with NOGROUP."""

    async def scenario() -> None:
        from gpt_trader.realtime.bars import LiveBar

        async with open_bus(kind) as bus:
            reader = BusBarReader(bus, ["AAPL"], "1s", group="session-x")
            await reader.start()
            await bus.delete("bars:1s:AAPL")
            bar = LiveBar(
                "AAPL", "1s", 1_000_000_000, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1, "final", False, False, 0, "t", 0
            )
            await bus.publish({"bars:1s:AAPL": [bar.to_fields()]})
            got = await reader.read(block_ms=10)
            assert [b.bar.ts_ns for b in got] == [1_000_000_000]
            assert bus.stats.groups_recreated == 1

    run(scenario)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("recovery", ["read_pending", "claim_stale", "consume"])
def test_pending_entries_trimmed_before_ack_are_acked_and_counted(
    kind: str, recovery: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Consumer A takes 10 entries and crashes; the producer goes on and MAXLEN trims them. Recovery must not leave
    them in the pending list forever (Redis' XREADGROUP 0 returns them without fields) nor drop them unseen."""

    async def scenario() -> None:
        async with open_bus(kind, maxlen=10) as bus:
            await bus.ensure_group("s", "g")
            await bus.publish({"s": [{"i": str(i)} for i in range(10)]})
            assert len(await bus.read_group("g", "a", ["s"], count=10)) == 10
            for lo in range(10, 1010, 100):  # MAXLEN ~ trims whole nodes: enough to drop the first one
                await bus.publish({"s": [{"i": str(i)} for i in range(lo, lo + 100)]})
            assert await bus.pending_count("s", "g") == 10
            if recovery == "read_pending":
                assert await bus.read_pending("g", "a", "s") == []
            elif recovery == "claim_stale":
                assert await bus.claim_stale("s", "g", "b", min_idle_ms=0) == []
            else:
                await consume(bus, "s", "g", "a", lambda f: None, max_entries=0, timeout_secs=0.1, claim_idle_ms=0)
            assert await bus.pending_count("s", "g") == 0
            assert bus.stats.trimmed_unacked == 10

    run(scenario)
    assert any("trimmed" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


def test_redis_ttl_spares_streams_with_consumer_groups() -> None:
    """`ttl_secs` used to expire a grouped stream with its group and unacked entries; now only streams nobody
    consumes through a group expire (MAXLEN bounds the others)."""

    async def scenario() -> None:
        async with open_bus("redis", ttl_secs=1) as bus:
            assert isinstance(bus, RedisStreamsBus)
            await bus.publish({"u": [{"i": "0"}]})  # a TTL set before the group exists ...
            await bus.ensure_group("u", "g")  # ... is removed with the group
            await bus.publish({"u": [{"i": "1"}], "plain": [{"i": "0"}]})
            await bus.read_group("g", "a", ["u"])
            await asyncio.sleep(2.2)
            assert await bus.pending_count("u", "g") == 2
            assert await bus.length("u") == 2
            assert await bus.length("plain") == 0  # expired: no group
            assert bus.stats.groups_recreated == 0

    run(scenario)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
