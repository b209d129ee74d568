"""The pipeline's bus writer against a Redis that fails: stopped and restarted, hung (SIGSTOP), out of memory
mid-batch, or holding a key of the wrong type. Each test runs its own throw-away redis-server on a free port (data
persisted to the test's tmp dir, so a restart keeps what was written), never the shared one on 6379."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from gpt_trader.realtime import DataSource, RealtimePipeline, StreamConfig
from gpt_trader.realtime.bus import RedisStreamsBus
from gpt_trader.realtime.config import RealtimeConfig
from gpt_trader.realtime.exchange import ExchangeConfig, LocalExchange
from tests.integration.conftest import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration
ENV = {"APCA_API_KEY_ID": "k", "APCA_API_SECRET_KEY": "s"}
PIPELINE_LOG = "gpt_trader.realtime.pipeline"


class RedisServer:
    """A redis-server subprocess on a free loopback port; `stop` saves to `directory`, `start` loads it back."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:  # pragma: no cover - CI and `make test` machines have it
            pytest.fail("redis-server is not installed: the outage tests need their own server (apt install redis)")
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.directory), "--dbfilename", "dump.rdb", "--daemonize", "no"]
        self.proc = subprocess.Popen([exe, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.cli("PING")
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def cli(self, *args: Any) -> Any:
        with redis.Redis(port=self.port, socket_timeout=5) as client:
            return client.execute_command(*args)

    def stop(self) -> None:
        """SHUTDOWN SAVE: the data comes back with the next `start`."""
        with pytest.raises(redis.ConnectionError):
            self.cli("SHUTDOWN", "SAVE")
        assert self.proc is not None
        self.proc.wait(10)

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if self.paused:
                self.resume()
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _pipeline(bus: RedisStreamsBus, url: str = "ws://127.0.0.1:9/", **config: Any) -> RealtimePipeline:
    cfg = RealtimeConfig(timeframes=["1s"], lateness_ms=50, start_timeout_secs=5, **config)
    return RealtimePipeline([StreamConfig(DataSource.ALPACA, ["AAPL"], url=url)], cfg, bus=bus, environ=ENV)


async def _ticks_in(bus: RedisStreamsBus, symbol: str = "AAPL") -> tuple[int, int]:
    """Ticks in the symbol's stream: (in distinct entries, in entries stored twice). An entry's payload is unique (its
    receive times differ from any other flush's), so an identical payload is one entry written twice."""
    payloads = [f["data"] for _, f in await bus.read_range(f"ticks:{symbol}")]
    distinct = sum(orjson.loads(d)["n"] for d in set(payloads))
    return distinct, sum(orjson.loads(d)["n"] for d in payloads) - distinct


async def _streaming(url: str) -> tuple[LocalExchange, RealtimePipeline]:
    """A local exchange streaming 300 simulated ticks/s and a started pipeline on the Redis at `url`, a second in."""
    ex = LocalExchange(ExchangeConfig(feed="simulated", rate=300, timestamps="now", batch=20))
    await ex.start()
    p = _pipeline(RedisStreamsBus(url, maxlen=1_000_000, prefix="t:"), ex.url("alpaca"))
    try:
        await p.start()
    except BaseException:
        await ex.stop()
        raise
    await asyncio.sleep(1.0)
    return ex, p


async def _assert_all_in_once(p: RealtimePipeline, url: str) -> None:
    """Every tick the pipeline accepted is in Redis and counted as published, and no tick or bar revision is in
    twice."""
    bus = RedisStreamsBus(url, prefix="t:")
    try:
        stored, twice = await _ticks_in(bus)
        bars = [f for _, f in await bus.read_range("bars:1s:AAPL")]
    finally:
        await bus.close()
    assert p.ticks_accepted > 600
    assert p.ticks_published == p.ticks_accepted == stored
    assert twice == 0
    assert max(Counter((f["ts"], f["revision"]) for f in bars).values()) == 1


@pytest.mark.slow
def test_outage_and_restart_lose_nothing_and_count_every_tick(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis stops for 2 s while ticks stream in and comes back with its data: every accepted tick is in Redis,
    `ticks_published` agrees (it used to miss the ticks re-sent after the outage), the outage is one warning plus a
    recovery line, and `bus_health()` / the metrics show it while it lasts.

    When the shutdown lands while a flush's XADDs are in flight, Redis can run and save them and exit before
    replying, and the writer, seeing the connection fail, sends them again after the restart (seen under the full
    parallel suite): the bus names each entry's ID and finds those written already, so nothing is in twice."""
    caplog.set_level(logging.INFO, logger=PIPELINE_LOG)

    async def scenario() -> None:
        ex, p = await _streaming(redis_server.url)
        try:
            await asyncio.to_thread(redis_server.stop)
            assert await wait_until(lambda: not p.bus_health()["up"], 5)
            await asyncio.sleep(2.0)
            health = p.bus_health()
            assert health["pending_ticks"] > 0
            assert redis_server.url in health["url"]
            assert p.metrics.registry.get_sample_value("gpt_trader_realtime_bus_up") == 0
            await asyncio.to_thread(redis_server.start)
            assert await wait_until(lambda: p.bus_health()["up"], 10)
            await asyncio.sleep(0.5)
            await ex.stop()  # the tape stops: what was accepted must all reach Redis
            await asyncio.sleep(0.3)
        finally:
            await p.close()
            await ex.stop()
        await _assert_all_in_once(p, redis_server.url)
        assert p.bus_health()["dropped_entries"] == {"rejected": 0, "invalid": 0, "stop": 0}

    asyncio.run(scenario())
    bus_warnings = [r for r in caplog.records if r.name == PIPELINE_LOG and r.levelno == logging.WARNING]
    assert len(bus_warnings) == 1  # no flood: one line per outage (plus a summary every 30 s)
    assert redis_server.url in bus_warnings[0].getMessage()
    assert any("back after" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


@pytest.mark.slow
def test_redis_hung_past_the_socket_timeout_gets_each_entry_once(redis_server: RedisServer) -> None:
    """Redis hangs (SIGSTOP) for 1.5 s while ticks stream in, past the client's 0.3 s socket timeout: the flushes
    sent meanwhile wait in its socket buffers, unanswered, and it runs them when it resumes, while the writer,
    having timed out, sends them again. Every accepted tick and bar is in Redis exactly once, and the bus counted
    the resent entries it found written already."""

    async def scenario() -> None:
        ex, p = await _streaming(redis_server.url + "?socket_timeout=0.3")
        try:
            redis_server.pause()
            assert await wait_until(lambda: not p.bus_health()["up"], 5)
            await asyncio.sleep(1.5)
            redis_server.resume()
            assert await wait_until(lambda: p.bus_health()["up"], 10)
            await asyncio.sleep(0.5)
            await ex.stop()
            await asyncio.sleep(0.3)
        finally:
            if redis_server.paused:
                redis_server.resume()
            await p.close()
            await ex.stop()
        await _assert_all_in_once(p, redis_server.url)
        assert p.bus_health()["duplicates_suppressed"] > 0  # the resends that met what the first sends wrote

    asyncio.run(scenario())


@pytest.mark.parametrize("failure", ["down", "hung"])
def test_stop_with_redis_down_or_hung_reports_what_is_lost(
    redis_server: RedisServer, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    """stop() retries the final flush for `bus_drain_timeout_secs`, returns even when Redis hangs, and names the
    Redis URL and the number of ticks and entries not published (they used to vanish without a word)."""
    caplog.set_level(logging.INFO, logger=PIPELINE_LOG)

    async def scenario() -> RealtimePipeline:
        bus = RedisStreamsBus(redis_server.url, prefix="t:")
        p = _pipeline(bus, bus_drain_timeout_secs=1.0)
        await p.start(wait_for_data=False)
        p._queue_entry("bars:1s:AAPL", {"i": "0"})
        assert await wait_until(lambda: redis_server.cli("XLEN", "t:bars:1s:AAPL") == 1, 5)
        if failure == "down":
            await asyncio.to_thread(redis_server.stop)
        else:
            redis_server.pause()
        for i in range(1, 4):
            p._queue_entry("bars:1s:AAPL", {"i": str(i)})
        p._pending_ticks["AAPL"] = [([1, 2], [1.0, 1.0], [1.0, 1.0], 0, "alpaca")]
        await asyncio.wait_for(p.close(), 30)
        return p

    try:
        p = asyncio.run(scenario())
    finally:
        if redis_server.paused:
            redis_server.resume()
    errors = [r.getMessage() for r in caplog.records if r.name == PIPELINE_LOG and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert redis_server.url in errors[0]
    assert "2 ticks and 3 other entries" in errors[0]
    health = p.bus_health()
    assert health["dropped_entries"]["stop"] == 3
    assert health["dropped_ticks"] == 2
    assert p.metrics.registry.get_sample_value("gpt_trader_realtime_bus_dropped_total", {"reason": "stop"}) == 5


def test_entry_redis_refuses_is_dropped_and_does_not_block_or_duplicate_others(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """`deadletter` holds a string (WRONGTYPE on every XADD): that entry is dropped with an error naming the stream
    and counted; the bars of the same batch are written once (they were re-sent on every flush: 3, 6, 9, ...)."""
    caplog.set_level(logging.INFO, logger=PIPELINE_LOG)

    async def scenario() -> RealtimePipeline:
        bus = RedisStreamsBus(redis_server.url, prefix="t:")
        redis_server.cli("SET", "t:deadletter", "not-a-stream")
        p = _pipeline(bus)
        try:
            for i in range(3):
                p._queue_entry("bars:1s:AAPL", {"i": str(i)})
            p._queue_entry("deadletter", {"reason": "x"})
            for _ in range(3):
                await p._flush()
            assert await bus.length("bars:1s:AAPL") == 3
            assert not p._pending_entries
        finally:
            await bus.close()
        return p

    p = asyncio.run(scenario())
    assert p.bus_health()["dropped_entries"]["rejected"] == 1
    errors = [r.getMessage() for r in caplog.records if r.name == PIPELINE_LOG and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "'deadletter'" in errors[0]
    assert "WRONGTYPE" in errors[0]


def test_partly_written_batch_resends_only_what_failed(redis_server: RedisServer) -> None:
    """Redis reaches maxmemory halfway through a pipelined batch (OOM on the rest, a passing state): only the
    refused entries are queued again, so once memory is freed every entry is in the stream exactly once."""

    async def scenario() -> None:
        bus = RedisStreamsBus(redis_server.url, prefix="t:")
        p = _pipeline(bus)
        used = int(redis_server.cli("INFO", "memory")["used_memory"])
        redis_server.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
        redis_server.cli("CONFIG", "SET", "maxmemory", str(used + 300_000))
        try:
            for i in range(2000):
                p._queue_entry("bars:1s:AAPL", {"i": str(i), "pad": "x" * 200})
            with pytest.raises(Exception, match="OutOfMemoryError"):
                await p._flush()
            written = await bus.length("bars:1s:AAPL")
            assert 0 < written < 2000
            assert len(p._pending_entries["bars:1s:AAPL"]) == 2000 - written
            with pytest.raises(Exception, match="OutOfMemoryError"):
                await p._flush()
            assert await bus.length("bars:1s:AAPL") == written  # the written ones were not sent again
            redis_server.cli("CONFIG", "SET", "maxmemory", "0")
            await p._flush()
            ids = [int(f["i"]) for _, f in await bus.read_range("bars:1s:AAPL")]
        finally:
            await bus.close()
        assert ids == list(range(2000))
        assert p.bus_health()["dropped_entries"]["rejected"] == 0

    asyncio.run(scenario())


def test_unreachable_redis_at_start_is_one_clear_message(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listens at the configured URL: the pipeline still runs (it recovers when Redis comes), and the log
    says once which Redis is unreachable; the password in the URL stays out of it."""
    caplog.set_level(logging.INFO, logger=PIPELINE_LOG)
    port = free_port()
    url = f"redis://user:secret@127.0.0.1:{port}/0"

    async def scenario() -> None:
        cfg = RealtimeConfig(
            timeframes=["1s"], start_timeout_secs=0, bus="redis", redis_url=url, bus_prefix=f"t{uuid.uuid4().hex}:",
            bus_drain_timeout_secs=0.3,
        )  # fmt: skip
        p = RealtimePipeline([StreamConfig(DataSource.ALPACA, ["AAPL"], url="ws://127.0.0.1:9/")], cfg, environ=ENV)
        await p.start(wait_for_data=False)
        p._queue_entry("bars:1s:AAPL", {"i": "0"})
        assert await wait_until(lambda: not p.bus_health()["up"], 5)
        await asyncio.sleep(0.5)
        assert p.started
        await p.close()

    asyncio.run(scenario())
    warnings = [r.getMessage() for r in caplog.records if r.name == PIPELINE_LOG and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"redis://user@127.0.0.1:{port}/0" in warnings[0]
    assert "secret" not in caplog.text
