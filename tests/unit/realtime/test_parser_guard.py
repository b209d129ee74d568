"""A parser that raises (a bug: parsers turn bad input into rejects) costs its frame only: a `parser_error` dead
letter, logged once per feed, with the frames around it ingested as usual. It used to escape `_on_frame`, end the
feed's task and stop that source for good. A feed task that ends with an error anyway says so at once."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
import pytest

from gpt_trader.realtime import DataSource, RealtimePipeline, StreamConfig
from gpt_trader.realtime.bus import InProcessBus
from gpt_trader.realtime.config import RealtimeConfig
from gpt_trader.realtime.exchange import ExchangeConfig, LocalExchange
from gpt_trader.realtime.sources import alpaca
from tests.support.frames import KEYS
from tests.support.waiting import wait_until

NOW = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
POISON = b'[{"T":"t","S":"AAA","i":999,"x":"V","p":10.0,"s":1,"t":"%sZ","poison":true}]' % NOW.encode()


def _frames() -> list[bytes]:
    good = [orjson.dumps([{"T": "t", "S": "AAA", "i": k, "x": "V", "p": 10.0, "s": 1, "t": f"{NOW}.{k:03d}Z"}])
            for k in range(6)]  # fmt: skip
    return [*good[:3], POISON, *good[3:]]


class _BuggyAdapter(alpaca.AlpacaAdapter):
    """Alpaca's adapter with a parser bug on one frame (and, for the batched path, on any run holding it)."""

    def parse(self, raw: bytes | str) -> Any:
        if raw == POISON:
            raise KeyError("poison")
        return super().parse(raw)

    @staticmethod
    def parse_trade_frames(raws: Any, start: int, stop: int | None = None) -> Any:  # type: ignore[override]
        if POISON in raws[start:stop]:
            raise IndexError("batched poison")
        return alpaca.parse_trade_frames(raws, start, stop)


@pytest.mark.parametrize("batched", [False, True])
def test_a_raising_parser_costs_its_frame_only(batched: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="gpt_trader.realtime")

    async def go() -> RealtimePipeline:
        p = RealtimePipeline(
            [StreamConfig(DataSource.ALPACA, ["AAA"], url="ws://127.0.0.1:9")],
            RealtimeConfig(timeframes=["1s"], start_timeout_secs=0),
            bus=InProcessBus(),
            environ=KEYS,
        )
        await p._build_feeds()
        feed = p.feeds[0]
        feed.adapter = _BuggyAdapter(feed.adapter._credentials)  # type: ignore[attr-defined]
        feed.health.connected = True
        for _ in range(2):  # twice: logged once
            if batched:
                feed.in_batch = True
                await p._on_frames(feed, _frames(), time.time_ns())
                feed.in_batch = False
            else:
                for raw in _frames():
                    await p._on_frame(feed, raw, time.time_ns())
        return p

    p = asyncio.run(go())
    assert p.ticks_accepted == 6  # the six good ones; the second pass's are duplicates
    assert p.dead_letters.by_reason() == {"parser_error": 2, "duplicate": 6}
    letter = next(d for d in p.dead_letters.recent if d.reason == "parser_error")
    assert "KeyError" in letter.detail
    assert "poison" in letter.raw
    parser_logs = [r for r in caplog.records if "the parser raised" in r.getMessage()]
    assert len(parser_logs) == 1
    assert len([r for r in caplog.records if "batched parse raised" in r.getMessage()]) == (1 if batched else 0)


def test_a_feed_task_ended_by_an_error_says_so(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="gpt_trader.realtime")

    async def go() -> list[str]:
        exchange = LocalExchange(ExchangeConfig(feed="simulated", rate=200))
        await exchange.start()
        p = RealtimePipeline(
            [StreamConfig(DataSource.ALPACA, ["AAA"], url=exchange.url("alpaca"))],
            RealtimeConfig(timeframes=["1s"], start_timeout_secs=0),
            bus=InProcessBus(),
            environ=KEYS,
        )

        def broken(*args: Any) -> None:
            raise RuntimeError("ingest bug")

        p._on_parsed = broken  # type: ignore[method-assign]  # past the parser: a bug in ingesting
        p._on_frames = broken  # type: ignore[method-assign]
        try:
            await p.start()
            await wait_until(lambda: any("stopped by an error" in r.getMessage() for r in caplog.records), 10)
        finally:
            await p.close()
            await exchange.stop()
        return [r.getMessage() for r in caplog.records]

    messages = asyncio.run(go())
    assert any(m.startswith("feed-alpaca stopped by an error") for m in messages)
