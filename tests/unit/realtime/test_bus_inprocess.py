"""InProcessBus: the same group/ack/claim semantics as Redis Streams, in memory."""

from __future__ import annotations

import asyncio

from gpt_trader.realtime.bus import InProcessBus, consume


def test_inprocess_bus_group_ack_and_claim_after_crash():
    async def scenario() -> None:
        bus = InProcessBus(maxlen=100, prefix="t:")
        await bus.ensure_group("s", "g")
        await bus.publish({"s": [{"i": str(i)} for i in range(10)]})
        first = await bus.read_group("g", "a", ["s"], count=4, block_ms=10)
        assert [e[2]["i"] for e in first] == ["0", "1", "2", "3"]
        await bus.ack("s", "g", [first[0][1]])
        assert await bus.pending_count("s", "g") == 3
        # consumer "a" crashes; "b" claims what "a" left pending once it is idle long enough
        assert await bus.claim_stale("s", "g", "b", min_idle_ms=10_000) == []
        await asyncio.sleep(0.02)
        claimed = await bus.claim_stale("s", "g", "b", min_idle_ms=10)
        assert [e[2]["i"] for e in claimed] == ["1", "2", "3"]
        seen: list[str] = []
        n = await consume(bus, "s", "g", "b", lambda f: seen.append(f["i"]), max_entries=100, timeout_secs=0.2)
        assert seen == ["1", "2", "3", "4", "5", "6", "7", "8", "9"]
        assert n == 9
        assert await bus.pending_count("s", "g") == 0

    asyncio.run(scenario())


def test_inprocess_bus_maxlen_bounds_memory():
    async def scenario() -> None:
        bus = InProcessBus(maxlen=5)
        for i in range(50):
            await bus.publish({"s": [{"i": i}]})
        assert await bus.length("s") == 5
        assert [f["i"] for _, f in await bus.read_range("s")] == [45, 46, 47, 48, 49]

    asyncio.run(scenario())


def test_inprocess_bus_read_group_blocks_until_publish():
    async def scenario() -> None:
        bus = InProcessBus()
        await bus.ensure_group("s", "g", start_id="$")
        reader = asyncio.create_task(bus.read_group("g", "c", ["s"], block_ms=2000))
        await asyncio.sleep(0.01)
        await bus.publish({"s": [{"x": 1}]})
        got = await asyncio.wait_for(reader, 2)
        assert [e[2] for e in got] == [{"x": 1}]

    asyncio.run(scenario())


def test_inprocess_bus_group_behind_trimming_counts_what_it_skipped(caplog):
    """A group that falls behind `maxlen` loses the trimmed entries (as on Redis); here it is counted and logged."""

    async def scenario() -> InProcessBus:
        bus = InProcessBus(maxlen=10)
        await bus.ensure_group("s", "g")
        await bus.publish({"s": [{"i": str(i)} for i in range(40)]})
        got = await bus.read_group("g", "a", ["s"], count=100, block_ms=0)
        assert [e[2]["i"] for e in got] == [str(i) for i in range(30, 40)]
        return bus

    bus = asyncio.run(scenario())
    assert bus.stats.skipped_by_trim == 30
    assert "30 entries were trimmed unread" in caplog.text
