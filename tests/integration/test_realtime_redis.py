"""RedisStreamsBus against the real Redis on 127.0.0.1:6379: pipelined XADD with MAXLEN ~, groups, acks, and a
crashed consumer's entries recovered with XAUTOCLAIM; the pipeline end to end with nothing lost. Every test uses
its own key prefix and deletes it."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio

from gpt_trader.realtime import DataSource, RealtimePipeline, StreamConfig
from gpt_trader.realtime.bars import LiveBar
from gpt_trader.realtime.bus import RedisStreamsBus, consume
from gpt_trader.realtime.config import RealtimeConfig
from gpt_trader.realtime.exchange import ExchangeConfig, LocalExchange
from tests.support.lossy_proxy import LossyProxy

pytestmark = pytest.mark.integration
URL = "redis://127.0.0.1:6379/0"


async def _bus(maxlen: int = 10_000) -> RedisStreamsBus:
    bus = RedisStreamsBus(URL, maxlen=maxlen, prefix=f"test:{uuid.uuid4().hex[:12]}:", ttl_secs=600)
    try:
        await bus.ping()
    except OSError as exc:  # pragma: no cover - only when Redis is down
        await bus.close()
        # A missing service must not pass as a green run: `make test` starts it (scripts/services.sh).
        pytest.fail(f"Redis not reachable at {URL} ({exc}); start it with `make services` or redis-server")
    return bus


def test_redis_bus_consumer_crash_pending_recovered_by_xautoclaim():
    async def scenario() -> None:
        bus = await _bus()
        try:
            await bus.ensure_group("ticks:AAPL", "bars")
            await bus.ensure_group("ticks:AAPL", "bars")  # idempotent (BUSYGROUP tolerated)
            assert await bus.publish({"ticks:AAPL": [{"i": str(i)} for i in range(20)]}) == 20
            got = await bus.read_group("bars", "worker-a", ["ticks:AAPL"], count=8, block_ms=100)
            assert [e[2]["i"] for e in got] == [str(i).encode() for i in range(8)]
            await bus.ack("ticks:AAPL", "bars", [got[0][1], got[1][1]])
            # worker-a crashes here with 6 entries pending
            assert await bus.pending_count("ticks:AAPL", "bars") == 6
            assert await bus.claim_stale("ticks:AAPL", "bars", "worker-b", min_idle_ms=60_000) == []
            await asyncio.sleep(0.06)
            handled: list[bytes] = []
            n = await consume(
                bus, "ticks:AAPL", "bars", "worker-b", lambda f: handled.append(f["i"]),
                max_entries=100, timeout_secs=0.5, claim_idle_ms=50,
            )  # fmt: skip
            assert handled == [str(i).encode() for i in range(2, 20)]
            assert n == 18
            assert await bus.pending_count("ticks:AAPL", "bars") == 0
            # a restarted worker-a finds nothing of its own left
            assert await bus.read_pending("bars", "worker-a", "ticks:AAPL") == []
        finally:
            await bus.delete_prefix()
            await bus.close()

    asyncio.run(scenario())


def test_redis_bus_maxlen_approximate_trim_bounds_stream():
    async def scenario() -> None:
        bus = await _bus(maxlen=1000)
        try:
            for _ in range(20):
                await bus.publish({"s": [{"x": "1"}] * 500})
            assert 1000 <= await bus.length("s") < 10_000 // 2  # MAXLEN ~ trims by whole radix-tree nodes
        finally:
            await bus.delete_prefix()
            await bus.close()

    asyncio.run(scenario())


@pytest.mark.slow
def test_pipeline_redis_bus_every_tick_and_bar_published():
    async def scenario() -> None:
        bus = await _bus(maxlen=1_000_000)
        ex = LocalExchange(ExchangeConfig(feed="simulated", rate=0, timestamps="now", max_ticks=30_000, batch=100))
        await ex.start()
        config = RealtimeConfig(timeframes=["1s"], lateness_ms=50, start_timeout_secs=5)
        env = {"APCA_API_KEY_ID": "k", "APCA_API_SECRET_KEY": "s"}
        p = RealtimePipeline(
            [StreamConfig(DataSource.ALPACA, ["AAPL", "MSFT"], url=ex.url("alpaca"))], config, bus=bus, environ=env
        )
        try:
            await p.start()
            deadline = time.monotonic() + 30
            while p.ticks_accepted < 30_000 and time.monotonic() < deadline:  # noqa: ASYNC110  (bounded poll)
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.5)  # let the last windows close and the writer flush
            await p.stop()
            n_ticks, bars = 0, []
            for sym in ("AAPL", "MSFT"):
                for _, fields in await bus.read_range(f"ticks:{sym}"):
                    data = orjson.loads(fields["data"])
                    assert len(data["price"]) == int(fields["n"]) == data["n"]
                    n_ticks += data["n"]
                bars += [LiveBar.from_fields(f) for _, f in await bus.read_range(f"bars:1s:{sym}")]
        finally:
            await bus.delete_prefix()
            await bus.close()
            await ex.stop()
        assert p.ticks_accepted == 30_000 == n_ticks  # zero loss: every tick is in Redis
        final = [b for b in bars if b.final]
        assert sum(b.volume for b in final) == pytest.approx(
            sum(p.get_live_data(s)["size"].sum() for s in ("AAPL", "MSFT"))
        )
        assert sum(b.trades for b in final) == 30_000

    asyncio.run(scenario())


@contextlib.asynccontextmanager
async def _through_proxy(**bus_options: Any) -> AsyncIterator[tuple[LossyProxy, RedisStreamsBus]]:
    """A bus on the local Redis through a `LossyProxy`, under a key prefix of its own (deleted after)."""
    proxy = LossyProxy("127.0.0.1", 6379)
    await proxy.start()
    bus = RedisStreamsBus(proxy.url(), prefix=f"test:{uuid.uuid4().hex[:12]}:", ttl_secs=600, **bus_options)
    try:
        yield proxy, bus
    finally:
        await bus.delete_prefix()
        await bus.close()
        await proxy.close()


class _Side(enum.IntEnum):
    BUY = 1


class _Kind(str, enum.Enum):  # noqa: UP042 - a str mixin whose str() is not its value, as in older code
    BAR = "bar"


def test_entries_resent_after_a_lost_reply_are_written_once():
    """The reply to a pipelined XADD batch is lost after Redis ran it (the connection drops): the publish fails,
    the caller sends the same entries again (with a new one), and each is in the stream once, in order: the bus
    named their IDs, found them written under those IDs with the same fields, and counted them instead of adding
    them twice. A request lost before Redis saw it is simply written on the resend."""

    async def scenario() -> None:
        async with _through_proxy() as (proxy, bus):
            first = [{"i": "0"}]
            batch = [{"i": str(i), "x": i * 1.5, "n": i, "e": _Side.BUY, "s": _Kind.BAR} for i in range(1, 4)]
            later = [{"i": "4"}]
            assert await bus.publish({"s": first}) == 1
            proxy.lose_reply()
            with pytest.raises(redis.ConnectionError):
                await bus.publish({"s": batch})
            assert proxy.lost == 1
            assert await bus.length("s") == 4  # Redis ran it: the three are in already
            assert await bus.publish({"s": [*batch, *later]}) == 4  # the caller's resend, the same objects
            assert bus.stats.duplicates_suppressed == 3
            assert [f["i"] for _, f in await bus.read_range("s")] == [b"0", b"1", b"2", b"3", b"4"]
            # Lost on the way in: not there, so the resend writes it (nothing to suppress).
            lost = [{"i": "5"}]
            proxy.lose_request()
            with pytest.raises(redis.ConnectionError):
                await bus.publish({"s": lost})
            assert await bus.length("s") == 5
            assert await bus.publish({"s": lost}) == 1
            assert bus.stats.duplicates_suppressed == 3
            assert [f["i"] for _, f in await bus.read_range("s")] == [str(i).encode() for i in range(6)]

    asyncio.run(scenario())


@pytest.mark.parametrize("loss", ["reply", "request"])
def test_one_object_twice_in_a_publish_is_two_entries_written_once_each(loss):
    """Entries are known by their object and by which listing of it they are: the same mapping twice in one call
    is two entries, and resending that call after its reply or its request was lost leaves exactly two."""

    async def scenario() -> None:
        async with _through_proxy() as (proxy, bus):
            assert await bus.publish({"s": [{"i": "0"}]}) == 1
            same = {"i": "x"}
            proxy.lose_reply() if loss == "reply" else proxy.lose_request()
            with pytest.raises(redis.ConnectionError):
                await bus.publish({"s": [same, same]})
            assert await bus.publish({"s": [same, same]}) == 2
            assert [f["i"] for _, f in await bus.read_range("s")] == [b"0", b"x", b"x"]
            assert bus.stats.duplicates_suppressed == (2 if loss == "reply" else 0)
            assert not bus._unsure

    asyncio.run(scenario())


def test_entries_trimmed_before_their_resend_are_not_added_again():
    """A lost reply on a batch longer than the stream's MAXLEN: by the resend, its first entries were trimmed away
    by its last ones. They count as written (they were), and are not appended again after the newer ones."""

    async def scenario() -> None:
        async with _through_proxy(maxlen=10) as (proxy, bus):
            assert await bus.publish({"s": [{"i": "first"}]}) == 1
            batch = [{"i": str(i)} for i in range(300)]
            proxy.lose_reply()
            with pytest.raises(redis.ConnectionError):
                await bus.publish({"s": batch})
            assert await bus.publish({"s": batch}) == 300
            info = await bus._redis.xinfo_stream(bus.prefix + "s")
            assert info["entries-added"] == 301  # nothing added twice
            kept = [int(f["i"]) for _, f in await bus.read_range("s")]
            assert kept == list(range(300 - len(kept), 300))  # the newest, in order
            assert bus.stats.duplicates_suppressed == 300

    asyncio.run(scenario())


def test_an_id_another_writer_took_gets_a_fresh_one_above_the_top():
    """Another writer moves the stream's top past the IDs this bus would name (an entry far in the future), or
    takes, with other fields, the very ID of an entry whose request was lost: the bus's entries go in once each,
    under fresh IDs above the top, and nothing of the other writer's is taken for ours."""

    async def scenario() -> None:
        other = redis.asyncio.Redis.from_url(URL)
        try:
            async with _through_proxy() as (proxy, bus):
                prefix = bus.prefix
                assert await bus.publish({"s": [{"i": "0"}]}) == 1
                await other.xadd(prefix + "s", {"i": "theirs-1"}, id="99999999999990-0")
                assert await bus.publish({"s": [{"i": "1"}, {"i": "2"}]}) == 2
                ids = [entry_id for entry_id, _ in await bus.read_range("s")]
                assert ids[-2:] == ["99999999999990-1", "99999999999990-2"]
                # Our entry's request is lost; the other writer then writes other fields under the ID it had.
                lost = [{"i": "3"}]
                proxy.lose_request()
                with pytest.raises(redis.ConnectionError):
                    await bus.publish({"s": lost})
                await other.xadd(prefix + "s", {"i": "theirs-2"}, id="99999999999990-3")
                assert await bus.publish({"s": lost}) == 1
                got = [f["i"] for _, f in await bus.read_range("s")]
                assert got == [b"0", b"theirs-1", b"1", b"2", b"theirs-2", b"3"]
                assert bus.stats.duplicates_suppressed == 0
        finally:
            await other.aclose()

    asyncio.run(scenario())


def test_an_id_overtaken_every_round_is_left_to_retry_not_dropped(monkeypatch):
    """When another writer keeps overtaking the fresh IDs (here: no rounds allowed at all), the entry comes back in
    `PublishError.retry` (a passing state), not `rejected`, and the next publish writes it."""
    from gpt_trader.realtime import bus as bus_module
    from gpt_trader.realtime.bus import PublishError

    async def scenario() -> None:
        other = redis.asyncio.Redis.from_url(URL)
        try:
            async with _through_proxy() as (_proxy, bus):
                assert await bus.publish({"s": [{"i": "0"}]}) == 1
                await other.xadd(bus.prefix + "s", {"i": "theirs"}, id="99999999999990-0")
                entry = {"i": "1"}
                monkeypatch.setattr(bus_module, "_ID_ROUNDS", 0)
                with pytest.raises(PublishError) as err:
                    await bus.publish({"s": [entry]})
                assert err.value.retry == {"s": [entry]}
                assert not err.value.rejected
                monkeypatch.setattr(bus_module, "_ID_ROUNDS", 3)
                assert await bus.publish(err.value.retry) == 1
                assert [f["i"] for _, f in await bus.read_range("s")] == [b"0", b"theirs", b"1"]
        finally:
            await other.aclose()

    asyncio.run(scenario())
