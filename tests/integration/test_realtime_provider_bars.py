"""Provider bar messages end to end: the local exchange sends each provider's documented bar message (Alpaca `b`,
Binance closed `kline`, Polygon `A`/`AM`) once a replayed bar's ticks are complete; the pipeline publishes them on
`provider_bars:<SYM>`, equal to the bundled bars and to its own bars aggregated from the trades."""

from __future__ import annotations

import asyncio
import functools

import numpy as np
import orjson
import pytest

from gpt_trader.realtime import DataSource, RealtimePipeline, StreamConfig, StreamType
from gpt_trader.realtime.bus import InProcessBus
from gpt_trader.realtime.config import RealtimeConfig
from gpt_trader.realtime.exchange import ExchangeConfig, LocalExchange
from gpt_trader.realtime.replay import load_series
from gpt_trader.realtime.sources import alpaca, binance, polygon
from tests.support.waiting import wait_until as _wait_until

ENV = {"APCA_API_KEY_ID": "PKTESTKEYID7Q2W9", "APCA_API_SECRET_KEY": "secret", "POLYGON_API_KEY": "polygon-key"}
FAST = {"backoff_base_secs": 0.02, "backoff_max_secs": 0.1, "tick_interval_ms": 10.0, "start_timeout_secs": 5.0}
PROTOCOLS = {DataSource.ALPACA: "alpaca", DataSource.BINANCE: "binance", DataSource.POLYGON: "polygon"}


# Polled every 5 ms: these scenarios watch short windows.
wait_until = functools.partial(_wait_until, step=0.005)


def bundled_rows(symbol: str, n: int) -> np.ndarray:
    s = load_series(symbol)
    return np.column_stack([s.ts[:n], s.open[:n], s.high[:n], s.low[:n], s.close[:n], s.volume[:n]])


@pytest.mark.parametrize("source", list(PROTOCOLS))
def test_provider_bars_published_equal_bundled_and_aggregated(source):
    n_bars, tpb, symbols = 25, 20, ["SPX", "GOOGL"]

    async def scenario() -> None:
        ex = LocalExchange(
            ExchangeConfig(feed="replay", rate=0, ticks_per_bar=tpb, batch=30, timestamps="original",
                           max_ticks=n_bars * tpb * len(symbols), quote_every=0)
        )  # fmt: skip
        await ex.start()
        config = RealtimeConfig(timeframes=["1d"], lateness_ms=0, max_future_secs=None, **FAST)
        p = RealtimePipeline(
            [StreamConfig(source, symbols, [StreamType.TRADES, StreamType.BARS], url=ex.url(PROTOCOLS[source]))],
            config, bus=InProcessBus(), environ=ENV,
        )  # fmt: skip
        try:
            await p.start()
            assert await wait_until(lambda: ex.stats.bars_sent == n_bars * len(symbols))
            assert await wait_until(lambda: p.ticks_accepted == n_bars * tpb * len(symbols))
            await asyncio.sleep(0.05)  # the last frame's bar messages are read with its trades
            p.flush_bars()
            await p._flush()
            published = {s: await p.bus.read_range(f"provider_bars:{s}") for s in symbols}
            aggregated = {s: p.final_bars(s, "1d") for s in symbols}
        finally:
            await p.close()
            await ex.stop()
        assert p.dead_letters.total == 0
        for sym in symbols:
            fields = [f for _, f in published[sym]]
            assert len(fields) == n_bars
            got = np.array([[int(f["ts"])] + [float(f[c]) for c in ("open", "high", "low", "close", "volume")]
                            for f in fields])  # fmt: skip
            np.testing.assert_array_equal(got[:, 0].astype(np.int64), bundled_rows(sym, n_bars)[:, 0])
            np.testing.assert_array_equal(got[:, 1:], bundled_rows(sym, n_bars)[:, 1:])  # exact: the bundled bars
            assert {f["tf_secs"] for f in fields} == {"86400" if source != DataSource.ALPACA else "60"}
            assert {f["source"] for f in fields} == {PROTOCOLS[source]}
            own = np.array([[b.ts_ns, b.open, b.high, b.low, b.close, b.volume] for b in aggregated[sym]])
            assert len(own) == n_bars
            np.testing.assert_array_equal(own[:, :5], got[:, :5])  # ts, open, high, low, close: the same trades
            np.testing.assert_allclose(own[:, 5], got[:, 5], rtol=1e-12)  # volume: a float sum of the sizes

    asyncio.run(scenario())


def test_exchange_bar_messages_use_documented_fields_and_follow_last_trade():
    """Raw messages: the documented shape per provider, the bar right after the trade that completes it, bars only
    when subscribed."""
    from websockets.asyncio.client import connect

    tpb = 4
    series = load_series("SPX")

    async def read(ex: LocalExchange, url: str, hello: list[str], n: int) -> list[object]:
        out: list[object] = []
        async with connect(url, proxy=None) as ws:
            for msg in hello:
                await ws.recv()
                await ws.send(msg)
            if hello:
                await ws.recv()
            while len(out) < n:
                payload = orjson.loads(await ws.recv())
                out.extend(payload if isinstance(payload, list) else [payload])
        return out

    async def scenario() -> None:
        ex = LocalExchange(
            ExchangeConfig(feed="replay", rate=0, ticks_per_bar=tpb, batch=6, timestamps="original", max_ticks=3 * tpb,
                           quote_every=0)
        )  # fmt: skip
        await ex.start()
        try:
            auth = orjson.dumps({"action": "auth", "key": "k", "secret": "s"}).decode()
            sub = orjson.dumps({"action": "subscribe", "trades": ["SPX"], "bars": ["SPX"]}).decode()
            a = await read(ex, ex.url("alpaca"), [auth, sub], 3 * tpb + 3)
            b = await read(ex, ex.url("binance") + "/stream?streams=spx@trade/spx@kline_1m", [], 3 * tpb + 3)
            pauth = orjson.dumps({"action": "auth", "params": "key"}).decode()
            psub = orjson.dumps({"action": "subscribe", "params": "T.SPX,AM.SPX"}).decode()
            pg = await read(ex, ex.url("polygon"), [pauth, psub], 3 * tpb + 3)
            only_trades = await read(ex, ex.url("binance") + "/stream?streams=spx@trade", [], 3 * tpb)
        finally:
            await ex.stop()
        # Alpaca: {"T":"b","S","o","h","l","c","v","t","n","vw"}, after the bar's last trade
        kinds = [m["T"] for m in a]
        assert kinds == (["t"] * tpb + ["b"]) * 3
        bar = a[tpb]
        assert set(bar) == {"T", "S", "o", "h", "l", "c", "v", "t", "n", "vw"}
        assert (bar["S"], bar["o"], bar["h"], bar["l"], bar["c"], bar["v"], bar["n"]) == (
            "SPX",
            series.open[0],
            series.high[0],
            series.low[0],
            series.close[0],
            series.volume[0],
            tpb,
        )
        assert alpaca.parse_frame(orjson.dumps([bar])).bars[0].ts_ns == series.ts[0]
        # Binance: kline event, closed, in the subscribed stream
        streams = [m["stream"] for m in b]
        assert streams == (["spx@trade"] * tpb + ["spx@kline_1m"]) * 3
        k = b[tpb]["data"]["k"]
        assert b[tpb]["data"]["e"] == "kline"
        assert set(k) == {"t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"}
        assert (k["x"], k["i"], k["n"], k["f"], k["L"]) == (True, "1d", tpb, 0, tpb - 1)
        assert (float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"]), float(k["v"])) == (
            series.open[0],
            series.high[0],
            series.low[0],
            series.close[0],
            series.volume[0],
        )
        parsed = binance.parse_frame(orjson.dumps(b[tpb])).bars[0]
        assert (parsed.ts_ns, parsed.timeframe_secs) == (series.ts[0], 86400)
        # Polygon: AM aggregate with s/e window bounds in ms
        evs = [m["ev"] for m in pg]
        assert evs == (["T"] * tpb + ["AM"]) * 3
        agg = pg[tpb]
        assert set(agg) == {"ev", "sym", "v", "av", "op", "vw", "o", "c", "h", "l", "a", "z", "s", "e"}
        assert (agg["o"], agg["h"], agg["l"], agg["c"], agg["v"]) == (
            series.open[0],
            series.high[0],
            series.low[0],
            series.close[0],
            series.volume[0],
        )
        assert agg["e"] - agg["s"] == 86_400_000
        assert pg[2 * tpb + 1]["av"] == series.volume[0] + series.volume[1]
        assert polygon.parse_frame(orjson.dumps([agg])).bars[0].ts_ns == series.ts[0]
        # no bars subscribed: none sent
        assert [m["stream"] for m in only_trades] == ["spx@trade"] * 3 * tpb

    asyncio.run(scenario())
