"""The pipeline's bus writer against in-process buses that stall or fail: `stop()` never cuts a publish off
halfway, an outage is retried with backoff and reported (one warning, a summary, a recovery line, `bus_health()` and
the `bus_*` metrics), ticks re-sent after a failure are counted once written, entries with fields no bus can store
are dropped and counted without blocking the rest, and what `stop()` cannot publish is logged and counted.

Entries go in through the writer's own queue (`_queue_entry`, and `_pending_ticks` as the ingest path fills it):
the feeds are not what is under test here (tests/integration/test_bus_redis_outage.py runs the whole path).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import pytest

from gpt_trader.realtime import DataSource, RealtimePipeline, StreamConfig
from gpt_trader.realtime.bus import Fields, InProcessBus
from gpt_trader.realtime.config import RealtimeConfig
from tests.support.waiting import wait_until

ENV = {"APCA_API_KEY_ID": "k", "APCA_API_SECRET_KEY": "s"}
PIPELINE_LOG = "gpt_trader.realtime.pipeline"


class SlowBus(InProcessBus):
    """Every publish takes `delay_secs` (a bus a few round trips away, or reconnecting)."""

    def __init__(self, delay_secs: float) -> None:
        super().__init__()
        self.delay_secs = delay_secs
        self.in_publish = asyncio.Event()

    async def publish(self, batches: Mapping[str, Sequence[Fields]]) -> int:
        self.in_publish.set()
        await asyncio.sleep(self.delay_secs)
        return await super().publish(batches)


class FlakyBus(InProcessBus):
    """Refuses every publish with a connection error while `down` (Redis unreachable)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.attempts = 0

    async def publish(self, batches: Mapping[str, Sequence[Fields]]) -> int:
        self.attempts += 1
        if self.down:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6391. Connection refused.")
        return await super().publish(batches)


def _pipeline(bus: InProcessBus, **config: Any) -> RealtimePipeline:
    # Nothing listens on port 9: the feed retries in the background and never delivers.
    cfg = RealtimeConfig(timeframes=["1s"], start_timeout_secs=0, **config)
    return RealtimePipeline(
        [StreamConfig(DataSource.ALPACA, ["AAPL"], url="ws://127.0.0.1:9/")], cfg, bus=bus, environ=ENV
    )


def _queue_bars(p: RealtimePipeline, lo: int, hi: int) -> None:
    for i in range(lo, hi):
        p._queue_entry("bars:1s:AAPL", {"i": str(i)})


def _queue_ticks(p: RealtimePipeline, n: int, start: int = 0) -> None:
    """`n` trades as the ingest path queues them: (ts_event, price, size, recv_ns, source)."""
    ts = list(range(start, start + n))
    p._pending_ticks.setdefault("AAPL", []).append((ts, [100.0] * n, [1.0] * n, 0, "alpaca"))
    p._pending_count += n


async def _bars_in(bus: InProcessBus) -> list[int]:
    return [int(f["i"]) for _, f in await bus.read_range("bars:1s:AAPL")]


async def _ticks_in(bus: InProcessBus) -> list[int]:
    return [t for _, f in await bus.read_range("ticks:AAPL") for t in orjson.loads(f["data"])["ts_event"]]


def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == PIPELINE_LOG and r.levelno == level]


def test_stop_waits_for_the_publish_in_flight() -> None:
    """stop() used to cancel the writer inside `bus.publish`, losing the batch it had taken off the queue."""

    async def scenario() -> None:
        bus = SlowBus(0.3)
        p = _pipeline(bus)
        await p.start(wait_for_data=False)
        _queue_bars(p, 0, 100)
        _queue_ticks(p, 40)
        await asyncio.wait_for(bus.in_publish.wait(), 5)  # the writer holds the first batch now
        _queue_bars(p, 100, 150)
        _queue_ticks(p, 10, start=40)
        await p.close()
        assert await _bars_in(bus) == list(range(150))
        assert await _ticks_in(bus) == list(range(50))
        assert p.ticks_published == 50
        assert p.bus_health()["dropped_entries"] == {"rejected": 0, "invalid": 0, "stop": 0}

    asyncio.run(scenario())


def test_flush_cancelled_mid_publish_puts_its_batch_back() -> None:
    """A cancelled flush (stop's deadline on a hung bus) keeps its batch queued, ahead of newer entries."""

    async def scenario() -> None:
        bus = SlowBus(10)
        p = _pipeline(bus)
        _queue_bars(p, 0, 3)
        flush = asyncio.create_task(p._flush())
        await asyncio.wait_for(bus.in_publish.wait(), 5)
        _queue_bars(p, 3, 5)
        flush.cancel()
        with pytest.raises(asyncio.CancelledError):
            await flush
        assert [int(f["i"]) for f in p._pending_entries["bars:1s:AAPL"]] == [0, 1, 2, 3, 4]
        bus.delay_secs = 0
        await p._flush()
        assert await _bars_in(bus) == [0, 1, 2, 3, 4]

    asyncio.run(scenario())


def test_outage_backs_off_reports_once_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    """One warning per outage (not one per retry), exponential backoff, state in bus_health() and the metrics,
    an INFO line on recovery, and every tick queued meanwhile published and counted exactly once."""
    caplog.set_level(logging.INFO, logger=PIPELINE_LOG)

    async def scenario() -> None:
        bus = FlakyBus()
        p = _pipeline(bus)
        registry = p.metrics.registry
        await p.start(wait_for_data=False)
        try:
            bus.down = True
            _queue_ticks(p, 30)
            _queue_bars(p, 0, 2)
            await asyncio.sleep(1.6)
            # Backoff 0.1, 0.2, 0.4, 0.8 s: five attempts in 1.6 s (a fixed 0.1 s retry made ~16).
            assert 2 <= bus.attempts <= 6
            health = p.bus_health()
            assert health["up"] is False
            assert health["down_secs"] > 1.0
            assert health["url"] == "memory://"
            assert health["failures"] == bus.attempts
            assert health["pending_ticks"] == 30
            assert health["pending_entries"] == 2
            assert "Connection refused" in health["last_error"]
            assert registry.get_sample_value("gpt_trader_realtime_bus_up") == 0
            assert registry.get_sample_value("gpt_trader_realtime_bus_publish_failures_total") == bus.attempts
            _queue_ticks(p, 20, start=30)
            bus.down = False
            assert await wait_until(lambda: p.bus_health()["up"], 5)
            assert await wait_until(lambda: p.ticks_published == 50, 2)
        finally:
            await p.close()
        assert await _ticks_in(bus) == list(range(50))
        assert await _bars_in(bus) == [0, 1]
        assert registry.get_sample_value("gpt_trader_realtime_bus_up") == 1
        assert registry.get_sample_value("gpt_trader_realtime_bus_pending") == 0

    asyncio.run(scenario())
    warnings = _records(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert "memory://" in warnings[0]
    assert "Connection refused" in warnings[0]
    assert any("back after" in m for m in _records(caplog, logging.INFO))


def test_stop_with_the_bus_down_logs_and_counts_what_is_lost(caplog: pytest.LogCaptureFixture) -> None:
    """The final flush retries until `bus_drain_timeout_secs`, then says what was not published and where."""
    caplog.set_level(logging.INFO, logger=PIPELINE_LOG)

    async def scenario() -> RealtimePipeline:
        bus = FlakyBus()
        bus.down = True
        p = _pipeline(bus, bus_drain_timeout_secs=0.5)
        await p.start(wait_for_data=False)
        _queue_ticks(p, 25)
        _queue_bars(p, 0, 3)
        await p.close()
        assert bus.attempts >= 2  # retried, not one try and give up
        return p

    p = asyncio.run(scenario())
    errors = _records(caplog, logging.ERROR)
    assert len(errors) == 1
    assert "memory://" in errors[0]
    assert "25 ticks and 3 other entries" in errors[0]
    health = p.bus_health()
    assert health["dropped_entries"]["stop"] == 3
    assert health["dropped_ticks"] == 25
    assert health["pending_ticks"] == health["pending_entries"] == 0
    assert p.metrics.registry.get_sample_value("gpt_trader_realtime_bus_dropped_total", {"reason": "stop"}) == 28
    assert p.ticks_published == 0


def test_stop_recovers_a_bus_that_comes_back_before_the_deadline() -> None:
    async def scenario() -> None:
        bus = FlakyBus()
        bus.down = True
        p = _pipeline(bus, bus_drain_timeout_secs=5)
        await p.start(wait_for_data=False)
        _queue_bars(p, 0, 3)
        asyncio.get_running_loop().call_later(0.4, setattr, bus, "down", False)
        await p.close()
        assert await _bars_in(bus) == [0, 1, 2]
        assert p.bus_health()["dropped_entries"]["stop"] == 0

    asyncio.run(scenario())


def test_entry_with_unstorable_fields_is_dropped_not_blocking(caplog: pytest.LogCaptureFixture) -> None:
    """A None field value is refused by every bus; the writer drops that entry (ERROR, counted) and publishes the
    rest instead of re-queueing the whole batch forever."""
    caplog.set_level(logging.INFO, logger=PIPELINE_LOG)

    async def scenario() -> RealtimePipeline:
        bus = InProcessBus()
        p = _pipeline(bus)
        _queue_bars(p, 0, 2)
        p._queue_entry("deadletter", {"reason": "bad", "detail": None})  # type: ignore[dict-item]
        _queue_ticks(p, 5)
        for _ in range(3):
            await p._flush()
        assert await _bars_in(bus) == [0, 1]
        assert await _ticks_in(bus) == list(range(5))
        assert await bus.length("deadletter") == 0
        assert p._pending_count == 0
        assert not p._pending_entries
        return p

    p = asyncio.run(scenario())
    assert p.bus_health()["dropped_entries"]["invalid"] == 1
    assert p.ticks_published == 5
    errors = _records(caplog, logging.ERROR)
    assert len(errors) == 1
    assert "'deadletter'" in errors[0]
    assert "'detail'" in errors[0]


def test_ticks_resent_after_a_failed_flush_are_counted_once_written() -> None:
    """A failed flush re-queues its ticks as encoded `ticks:` entries; the flush that writes them counts them."""

    async def scenario() -> None:
        bus = FlakyBus()
        p = _pipeline(bus)
        bus.down = True
        _queue_ticks(p, 30)
        with pytest.raises(ConnectionError):
            await p._flush()
        assert p.ticks_published == 0
        bus.down = False
        _queue_ticks(p, 5, start=30)
        await p._flush()
        assert p.ticks_published == 35
        assert await _ticks_in(bus) == list(range(35))

    asyncio.run(scenario())
