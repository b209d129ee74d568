"""A local exchange: one loopback websocket server speaking the Alpaca v2, Binance combined-stream, Polygon and
IEX protocols, streaming the bundled real bars (or seeded simulated ones) as trades and quotes.

Paths: `/v2/<feed>` Alpaca, `/stream?streams=..` (or `/ws/<stream>`) Binance, `/stocks` Polygon, `/1.0/tops` IEX.
Pacing is against a wall-clock schedule anchored at `epoch_ns` (`rate` ticks per second per connection, 0 = as fast
as possible), so a restarted server with the same epoch resumes where the market would be, as a real one does:
what was sent while a client was away is lost to it and must be backfilled. `timestamps="original"` stamps ticks
inside their real bar (so they aggregate back to it); `"now"` stamps them with this server's clock plus `skew_secs`
(to test clock-offset correction).

Bars: a client subscribed to bars (Alpaca `{"action":"subscribe","bars":[..]}`, Binance `<sym>@kline_<interval>`,
Polygon `A.<SYM>`/`AM.<SYM>`) gets each provider's documented bar message (Alpaca `T: "b"`, Binance `kline` event
with `x: true`, Polygon `ev: "A"`/`"AM"`) as soon as the replayed ticks of a tape bar are complete, right after its
last trade, carrying that bar's OHLCV (the bundled bar, exactly), trade count and VWAP. The tape has one timeframe,
so that is the bar width whatever interval was asked for (Binance's `k.i` and Polygon's `s`/`e` say so). Bars are
sent with `timestamps="original"` only (restamped ticks no longer fall in their tape bar); IEX TOPS has no bars.

    with ExchangeThread(ExchangeConfig(rate=0)) as ex:
        url = ex.url("alpaca")          # ws://127.0.0.1:<port>/v2/iex
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import numpy as np
import orjson

from gpt_trader.realtime.replay import Feed, TickTape, load_series

_NS = 1_000_000_000
_MS = 1_000_000
Protocol_ = Literal["alpaca", "binance", "polygon", "iex"]


@dataclass(frozen=True)
class ExchangeConfig:
    """How the local exchange streams."""

    host: str = "127.0.0.1"
    port: int = 0
    feed: Feed = "auto"
    rate: float = 1000.0  # trades per second per connection; 0 = as fast as possible
    ticks_per_bar: int = 20
    batch: int = 100  # messages per frame for the array protocols (Alpaca, Polygon, IEX); Binance sends one
    timestamps: Literal["original", "now"] = "original"
    skew_secs: float = 0.0
    quote_every: int = 10  # one quote per this many trades of a symbol (0 = no quotes)
    epoch_ns: int | None = None  # pacing anchor; None = server start (or the first subscription, see below)
    # With no `epoch_ns`: the tape's clock starts when the first client subscribes, not when the server starts, so
    # a client that takes a while to connect misses nothing (a replay session, `stream --source replay`). A client
    # that connects later joins where the tape is by then, like a market.
    start_on_subscribe: bool = False
    start_bar: int = 0  # where the tape starts at `epoch_ns`
    max_ticks: int | None = None  # per connection
    seed: int = 7
    alpaca_keys: tuple[str, str] | None = None  # None: any non-empty pair is accepted
    polygon_key: str | None = None


@dataclass
class ExchangeStats:
    """What the server did."""

    connections: int = 0
    ticks_sent: int = 0
    quotes_sent: int = 0
    frames_sent: int = 0
    bars_sent: int = 0
    per_symbol: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Subscription:
    """What one client asked for: symbols, and whether trades, quotes and bars (`bars`: the provider's bar
    channel as subscribed: Alpaca "b", Binance "kline_<interval>", Polygon "A" or "AM"; None = no bars)."""

    symbols: list[str]
    trades: bool = True
    quotes: bool = False
    bars: str | None = None


@dataclass(frozen=True, slots=True)
class TapeBar:
    """A tape bar whose replayed ticks are complete: what the bar messages carry."""

    ts_ns: int
    width_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int
    pv: float  # sum of price * size of its trades (VWAP = pv / volume)
    first_id: int
    last_id: int
    day_volume: float  # volume of this connection's bars so far, this one included (Polygon's `av`)
    day_open: float  # the first bar's open (Polygon's `op`)
    day_pv: float  # sum of price * size so far (Polygon's `a` = day_pv / day_volume)


class _FastIso:
    """RFC 3339 with nanoseconds, caching the whole-second prefix."""

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = ""

    def __call__(self, ns: int) -> str:
        sec, frac = divmod(ns, _NS)
        if sec != self._sec:
            self._sec = sec
            self._prefix = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{frac:09d}Z"


class LocalExchange:
    """The server; `await start()` binds (port 0 = ephemeral) and returns the port."""

    def __init__(self, config: ExchangeConfig | None = None) -> None:
        self.config = config or ExchangeConfig()
        self.stats = ExchangeStats()
        self._server: Any = None
        self._epoch_ns = self.config.epoch_ns
        self._tapes: dict[str, TickTape] = {}
        self._connections: set[Any] = set()
        self.port = self.config.port

    def tape(self, symbol: str) -> TickTape:
        """The symbol's tick tape (loaded on first use)."""
        tape = self._tapes.get(symbol)
        if tape is None:
            tape = self._tapes[symbol] = TickTape(
                load_series(symbol, self.config.feed), self.config.ticks_per_bar, self.config.seed
            )
        return tape

    async def start(self) -> int:
        """Bind and serve in the running loop."""
        from websockets.asyncio.server import serve

        if self._epoch_ns is None and not self.config.start_on_subscribe:
            self._epoch_ns = time.time_ns()
        self._server = await serve(
            self._handle, self.config.host, self.config.port, ping_interval=20, ping_timeout=20, max_size=2**20,
            compression=None,
        )  # fmt: skip
        self.port = self._server.sockets[0].getsockname()[1]
        return int(self.port)

    @property
    def epoch_ns(self) -> int | None:
        """The pacing anchor (fixed at the first start, or the first subscription with `start_on_subscribe`; None
        until then). Pass it to a restarted server to resume the schedule."""
        return self._epoch_ns

    async def stop(self) -> None:
        """Stop accepting and drop every connection abruptly (like a crashed exchange gateway)."""
        if self._server is None:
            return
        for ws in list(self._connections):
            with contextlib.suppress(Exception):
                ws.transport.abort()
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)
        self._server = None

    def url(self, protocol: Protocol_, symbols: Sequence[str] = ()) -> str:
        """The base URL a client of `protocol` should use."""
        base = f"ws://{self.config.host}:{self.port}"
        return {"alpaca": f"{base}/v2/iex", "binance": base, "polygon": f"{base}/stocks", "iex": f"{base}/1.0/tops"}[
            protocol
        ]

    # --- connection handling ------------------------------------------------------------------------------------
    async def _handle(self, ws: Any) -> None:
        self._connections.add(ws)
        self.stats.connections += 1
        try:
            path = ws.request.path
            if path.startswith("/v2/"):
                await self._stream(ws, "alpaca", await self._alpaca_handshake(ws))
            elif path.startswith("/stream") or path.startswith("/ws/"):
                await self._stream(ws, "binance", self._binance_subscription(path))
            elif path.startswith("/stocks"):
                await self._stream(ws, "polygon", await self._polygon_handshake(ws))
            elif path.startswith("/1.0/"):
                await self._stream(ws, "iex", Subscription(await self._iex_handshake(ws), quotes=True))
            else:
                await ws.close(1008, "unknown path")
        except Exception:
            pass
        finally:
            self._connections.discard(ws)

    async def _alpaca_handshake(self, ws: Any) -> Subscription:
        await ws.send(b'[{"T":"success","msg":"connected"}]'.decode())
        auth = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        keys = self.config.alpaca_keys
        ok = isinstance(auth, dict) and auth.get("action") == "auth" and auth.get("key") and auth.get("secret")
        if ok and keys is not None:
            ok = (auth.get("key"), auth.get("secret")) == keys
        if not ok:
            await ws.send('[{"T":"error","code":402,"msg":"auth failed"}]')
            await ws.close(1008, "auth failed")
            raise PermissionError("auth failed")
        await ws.send('[{"T":"success","msg":"authenticated"}]')
        sub = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        trades, quotes, bars = (list(sub.get(k) or []) for k in ("trades", "quotes", "bars"))
        reply = [{"T": "subscription", "trades": trades, "quotes": quotes, "bars": bars, "updatedBars": [],
                  "dailyBars": [], "statuses": [], "lulds": [], "corrections": trades,
                  "cancelErrors": trades}]  # fmt: skip
        await ws.send(orjson.dumps(reply).decode())
        symbols = list(dict.fromkeys(s.upper() for s in trades + quotes + bars))
        return Subscription(symbols, bool(trades) or not bars, bool(quotes), "b" if bars else None)

    def _binance_subscription(self, path: str) -> Subscription:
        parts = urlsplit(path)
        names = (
            parse_qs(parts.query).get("streams", [""])[0].split("/") if parts.path == "/stream" else [parts.path[4:]]
        )
        symbols = list(dict.fromkeys(n.split("@")[0].upper() for n in names if "@" in n))
        kinds = [n.split("@", 1)[1] for n in names if "@" in n]
        kline = next((k for k in kinds if k.startswith("kline_")), None)
        trades = any(k in ("trade", "aggTrade") for k in kinds) or kline is None
        return Subscription(symbols, trades, "bookTicker" in kinds, kline)

    async def _polygon_handshake(self, ws: Any) -> Subscription:
        await ws.send('[{"ev":"status","status":"connected","message":"Connected Successfully"}]')
        auth = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        key = auth.get("params") if isinstance(auth, dict) else None
        if not key or (self.config.polygon_key is not None and key != self.config.polygon_key):
            await ws.send('[{"ev":"status","status":"auth_failed","message":"authentication failed"}]')
            await ws.close(1008, "auth failed")
            raise PermissionError("auth failed")
        await ws.send('[{"ev":"status","status":"auth_success","message":"authenticated"}]')
        sub = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        channels = [c for c in str(sub.get("params", "")).split(",") if "." in c]
        await ws.send(
            orjson.dumps(
                [{"ev": "status", "status": "success", "message": f"subscribed to: {c}"} for c in channels]
            ).decode()
        )
        symbols = list(dict.fromkeys(c.split(".", 1)[1].upper() for c in channels))
        kinds = {c.split(".", 1)[0] for c in channels}
        bars = "AM" if "AM" in kinds else "A" if "A" in kinds else None
        return Subscription(symbols, "T" in kinds or bars is None, "Q" in kinds, bars)

    async def _iex_handshake(self, ws: Any) -> list[str]:
        sub = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if not (isinstance(sub, list) and len(sub) == 2 and sub[0] == "subscribe"):
            await ws.close(1008, 'expected ["subscribe", "aapl,spy"]')
            raise ValueError("bad subscription")
        return [s.strip().upper() for s in str(sub[1]).split(",") if s.strip()]

    # --- streaming ----------------------------------------------------------------------------------------------
    async def _stream(self, ws: Any, protocol: Protocol_, sub: Subscription) -> None:
        symbols, quotes = sub.symbols, sub.quotes
        if not symbols:
            await ws.wait_closed()
            return
        cfg = self.config
        tapes = [self.tape(s) for s in symbols]
        if self._epoch_ns is None:  # `start_on_subscribe`: the first subscription starts the tape (tapes loaded)
            self._epoch_ns = time.time_ns()
        n_sym = len(symbols)
        per_sym_rate = cfg.rate / n_sym if cfg.rate > 0 else 0.0
        base = [cfg.start_bar * cfg.ticks_per_bar] * n_sym
        now = time.time_ns()
        epoch = self._epoch_ns
        elapsed = (now - epoch) / _NS
        cursors = [b + (max(0, int(elapsed * per_sym_rate)) if per_sym_rate else 0) for b in base]
        original = cfg.timestamps == "original"
        chunk = max(1, cfg.batch // n_sym) if protocol != "binance" else max(1, 64 // n_sym)
        iso = _FastIso()
        sent = 0
        with_bars = sub.bars is not None and original and protocol != "iex"
        day: dict[str, tuple[float, float, float]] = {}  # symbol -> (volume, open, pv) of the bars sent
        while cfg.max_ticks is None or sent < cfg.max_ticks:
            if per_sym_rate:
                elapsed = (time.time_ns() - epoch) / _NS
                due = [b + max(0, int(elapsed * per_sym_rate)) for b in base]
                counts = [min(d - c, chunk) for d, c in zip(due, cursors, strict=True)]
                if max(counts) <= 0:
                    await asyncio.sleep(min(0.05, max(0.0005, 1.0 / per_sym_rate)))
                    continue
            else:
                counts = [chunk] * n_sym
            if cfg.max_ticks is not None:
                room = cfg.max_ticks - sent
                counts = [min(c, max(0, math.ceil(room / n_sym))) for c in counts]
            frames: list[str | bytes] = []
            records: list[tuple[str, Any, Any, Any, Any]] = []
            bars: dict[str, list[TapeBar]] = {}
            for i, (sym, tape) in enumerate(zip(symbols, tapes, strict=True)):
                if counts[i] <= 0:
                    continue
                start = cursors[i]
                if original and start >= len(tape):
                    continue
                ts, px, sz, ids = (
                    tape.chunk(start % len(tape), counts[i]) if not original else tape.chunk(start, counts[i])
                )
                if not original:
                    ids = np.arange(start, start + len(ts), dtype=np.int64)
                    ts = np.full(len(ts), time.time_ns() + int(cfg.skew_secs * _NS), dtype=np.int64)
                cursors[i] += len(ts)
                records.append((sym, ts, px, sz, ids))
                if with_bars:
                    done = _complete_bars(tape, start, start + len(ts), day, sym)
                    if done:
                        bars[sym] = done
            if not records:
                if original and all(c >= len(t) for c, t in zip(cursors, tapes, strict=True)):
                    await ws.wait_closed()  # the tape is over; stay connected like a market after the close
                    return
                await asyncio.sleep(0.001)
                continue
            n_ticks = sum(len(r[1]) for r in records)
            frames = _encode(protocol, records, quotes, cfg.quote_every, iso, bars, sub.bars, trades=sub.trades)
            for frame in frames:
                await ws.send(frame)
            sent += n_ticks
            if sub.trades:
                self.stats.ticks_sent += n_ticks
            self.stats.bars_sent += sum(len(b) for b in bars.values())
            self.stats.frames_sent += len(frames)
            for sym, ts, *_ in records:
                self.stats.per_symbol[sym] = self.stats.per_symbol.get(sym, 0) + len(ts)
            if not per_sym_rate:
                await asyncio.sleep(0)  # let other connections and the client side of an in-process loop run
        await ws.wait_closed()  # the tape is over: stay connected, as a market does after the close


def _complete_bars(
    tape: TickTape, start: int, end: int, day: dict[str, tuple[float, float, float]], symbol: str
) -> list[TapeBar]:
    """The tape bars whose last tick is in ticks `[start, end)` (so all their ticks have been replayed)."""
    tpb = tape.ticks_per_bar
    s = tape.series
    out: list[TapeBar] = []
    for k in range(start // tpb, end // tpb):
        if k >= len(s):
            break
        _, px, sz = tape.bar_ticks(k)
        pv = float(px @ sz)
        v = float(s.volume[k])
        volume, day_open, day_pv = day.get(symbol, (0.0, float(s.open[k]), 0.0))
        volume, day_pv = volume + v, day_pv + pv
        day[symbol] = (volume, day_open, day_pv)
        out.append(
            TapeBar(int(s.ts[k]), s.timeframe_ns, float(s.open[k]), float(s.high[k]), float(s.low[k]),
                    float(s.close[k]), v, tpb, pv, k * tpb, (k + 1) * tpb - 1, volume, day_open, day_pv)
        )  # fmt: skip
    return out


_BINANCE_INTERVALS = {1: "1s", 60: "1m", 180: "3m", 300: "5m", 900: "15m", 1800: "30m", 3600: "1h", 7200: "2h",
                      14400: "4h", 21600: "6h", 28800: "8h", 43200: "12h", 86400: "1d", 259200: "3d",
                      604800: "1w"}  # fmt: skip


def _num(x: float) -> str:
    """A number as Binance writes it: a decimal string."""
    return repr(float(x))


def _bar_message(protocol: Protocol_, sym: str, b: TapeBar, kind: str | None, iso: _FastIso) -> Any:
    """One provider bar message, with each provider's documented field names."""
    vwap = b.pv / b.volume if b.volume else b.close
    if protocol == "alpaca":  # https://docs.alpaca.markets/docs/real-time-stock-pricing-data#bars
        return {"T": "b", "S": sym, "o": b.open, "h": b.high, "l": b.low, "c": b.close, "v": b.volume,
                "t": iso(b.ts_ns), "n": b.trades, "vw": vwap}  # fmt: skip
    if protocol == "polygon":  # https://polygon.io/docs/stocks/ws_stocks_a (and ws_stocks_am)
        return {"ev": kind or "A", "sym": sym, "v": b.volume, "av": b.day_volume, "op": b.day_open, "vw": vwap,
                "o": b.open, "c": b.close, "h": b.high, "l": b.low, "a": b.day_pv / b.day_volume if b.day_volume
                else vwap, "z": int(b.volume // b.trades) if b.trades else 0, "s": b.ts_ns // _MS,
                "e": (b.ts_ns + b.width_ns) // _MS}  # fmt: skip
    # Binance: https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams#klinecandlestick-streams
    close_ms = (b.ts_ns + b.width_ns) // _MS - 1
    interval = _BINANCE_INTERVALS.get(b.width_ns // _NS, (kind or "kline_1m").removeprefix("kline_"))
    k = {"t": b.ts_ns // _MS, "T": close_ms, "s": sym, "i": interval, "f": b.first_id, "L": b.last_id,
         "o": _num(b.open), "c": _num(b.close), "h": _num(b.high), "l": _num(b.low), "v": _num(b.volume),
         "n": b.trades, "x": True, "q": _num(b.pv), "V": _num(b.volume), "Q": _num(b.pv), "B": "0"}  # fmt: skip
    data = {"e": "kline", "E": close_ms, "s": sym, "k": k}
    return {"stream": f"{sym.lower()}@{kind or 'kline_1m'}", "data": data}


def _quote_rows(ids: Any, quote_every: int) -> Any:
    return np.flatnonzero(ids % quote_every == 0) if quote_every > 0 else np.empty(0, dtype=np.int64)


def _encode(
    protocol: Protocol_,
    records: list[tuple[str, Any, Any, Any, Any]],
    quotes: bool,
    quote_every: int,
    iso: _FastIso,
    bars: dict[str, list[TapeBar]] | None = None,
    bar_kind: str | None = None,
    *,
    trades: bool = True,
) -> list[str | bytes]:
    """One frame per batch for the array protocols; one per event for Binance. Each of `bars` (per symbol)
    follows the trade that completes it (the one with its `last_id`)."""
    bars = bars or {}
    if protocol == "binance":
        out: list[str | bytes] = []
        for sym, ts, px, sz, ids in records:
            low = sym.lower()
            q_rows = set(_quote_rows(ids, quote_every).tolist()) if quotes else set()
            klines = {b.last_id: orjson.dumps(_bar_message(protocol, sym, b, bar_kind, iso)).decode()
                      for b in bars.get(sym, ())}  # fmt: skip
            for j, (t, p, s, i) in enumerate(zip(ts.tolist(), px.tolist(), sz.tolist(), ids.tolist(), strict=True)):
                ms = t // _MS
                if trades:
                    out.append(
                        f'{{"stream":"{low}@trade","data":{{"e":"trade","E":{ms},"s":"{sym}","t":{i},"p":"{p!r}",'
                        f'"q":"{s!r}","T":{ms},"m":false,"M":true}}}}'
                    )
                if j in q_rows:
                    out.append(
                        f'{{"stream":"{low}@bookTicker","data":{{"u":{i},"s":"{sym}","b":"{p * 0.9999!r}",'
                        f'"B":"100.0","a":"{p * 1.0001!r}","A":"100.0"}}}}'
                    )
                if klines and i in klines:
                    out.append(klines[i])
        return out
    messages: list[dict[str, Any]] = []
    for sym, ts, px, sz, ids in records:
        tl, pl, sl, il = ts.tolist(), px.tolist(), sz.tolist(), ids.tolist()
        first = len(messages)
        if not trades:
            pass  # bars only: the ticks pace the tape but are not sent
        elif protocol == "alpaca":
            messages.extend(
                {"T": "t", "S": sym, "i": i, "x": "V", "p": p, "s": s, "t": iso(t), "c": ["@"], "z": "C"}
                for t, p, s, i in zip(tl, pl, sl, il, strict=True)
            )
        elif protocol == "polygon":
            messages.extend(
                {"ev": "T", "sym": sym, "x": 4, "i": str(i), "z": 3, "p": p, "s": s, "c": [0], "t": t // _MS, "q": i}
                for t, p, s, i in zip(tl, pl, sl, il, strict=True)
            )
        else:
            messages.extend(
                {"symbol": sym, "price": p, "size": s, "time": t // _MS, "seq": i}
                for t, p, s, i in zip(tl, pl, sl, il, strict=True)
            )
        sym_bars = bars.get(sym) if protocol != "iex" else None
        if sym_bars:  # right after the trade that completes each (ids are the tape's tick indices)
            for b in reversed(sym_bars):
                at = first + b.last_id - il[0] + 1 if trades else len(messages)
                messages.insert(at, _bar_message(protocol, sym, b, bar_kind, iso))
        if quotes:
            for j in _quote_rows(ids, quote_every).tolist():
                t, p = tl[j], pl[j]
                bid, ask = p * 0.9999, p * 1.0001
                if protocol == "alpaca":
                    messages.append({"T": "q", "S": sym, "bx": "V", "bp": bid, "bs": 100, "ax": "V", "ap": ask,
                                     "as": 100, "t": iso(t), "c": ["R"], "z": "C"})  # fmt: skip
                elif protocol == "polygon":
                    messages.append({"ev": "Q", "sym": sym, "bx": 4, "bp": bid, "bs": 100, "ax": 4, "ap": ask,
                                     "as": 100, "c": 0, "t": t // _MS, "q": il[j], "z": 3})  # fmt: skip
                else:
                    messages.append({"symbol": sym, "bidPrice": bid, "bidSize": 100, "askPrice": ask, "askSize": 100,
                                     "lastUpdated": t // _MS, "lastSalePrice": p, "lastSaleSize": sl[j],
                                     "lastSaleTime": t // _MS, "volume": 0, "marketPercent": 0.0})  # fmt: skip
    return [orjson.dumps(messages).decode()]


class ExchangeThread:
    """Runs a `LocalExchange` on its own event loop in a daemon thread (for sync tests, scripts and the CLI)."""

    def __init__(self, config: ExchangeConfig | None = None) -> None:
        self.config = config or ExchangeConfig()
        self.exchange = LocalExchange(self.config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ExchangeThread:
        """Start the loop thread and bind."""
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="local-exchange", daemon=True)
        self._thread.start()
        ready.wait(5)
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self.exchange.start(), self._loop).result(30)
        return self

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.exchange.port)

    def url(self, protocol: Protocol_) -> str:
        """See `LocalExchange.url`."""
        return self.exchange.url(protocol)

    def kill(self) -> None:
        """Stop the server abruptly (connections aborted); the loop keeps running for a restart."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self.exchange.stop(), self._loop).result(10)

    def restart(self) -> None:
        """Start a fresh server on the same port with the same pacing epoch (the market went on meanwhile)."""
        assert self._loop is not None
        config = replace(self.config, port=self.port, epoch_ns=self.exchange.epoch_ns)
        self.exchange = LocalExchange(config)
        asyncio.run_coroutine_threadsafe(self.exchange.start(), self._loop).result(30)

    def stop(self) -> None:
        """Stop the server and the loop."""
        if self._loop is None:
            return
        with contextlib.suppress(Exception):
            self.kill()
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None

    def __enter__(self) -> ExchangeThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def serve(config: ExchangeConfig, duration_secs: float | None = None, on_ready: Any = None) -> ExchangeStats:
    """Serve until cancelled or for `duration_secs`; `on_ready(port)` is called once bound."""
    exchange = LocalExchange(config)
    port = await exchange.start()
    if on_ready is not None:
        on_ready(port)
    try:
        if duration_secs is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(duration_secs)
    finally:
        await exchange.stop()
    return exchange.stats


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m gpt_trader.realtime.exchange`: serve until killed; prints `PORT <n>` when ready."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--feed", choices=["auto", "replay", "simulated"], default="auto")
    p.add_argument("--rate", type=float, default=1000.0, help="trades/s per connection; 0 = as fast as possible")
    p.add_argument("--ticks-per-bar", type=int, default=20)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--timestamps", choices=["original", "now"], default="original")
    p.add_argument("--skew-secs", type=float, default=0.0)
    p.add_argument("--quote-every", type=int, default=10)
    p.add_argument("--duration", type=float, default=None)
    p.add_argument("--start-on-subscribe", action="store_true", help="start the tape's clock at the first subscription")
    args = p.parse_args(argv)
    config = ExchangeConfig(
        host=args.host, port=args.port, feed=args.feed, rate=args.rate, ticks_per_bar=args.ticks_per_bar,
        batch=args.batch, timestamps=args.timestamps, skew_secs=args.skew_secs, quote_every=args.quote_every,
        start_on_subscribe=args.start_on_subscribe,
    )  # fmt: skip
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config, args.duration, lambda port: print(f"PORT {port}", flush=True)))


if __name__ == "__main__":
    main()
