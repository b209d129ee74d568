"""Binance spot combined streams (wss://stream.binance.com:9443/stream?streams=<a>/<b>).

Wire format: each frame is one event wrapped as `{"stream": "<symbol>@<kind>", "data": {...}}`; prices and
quantities are strings, times are milliseconds. We use `<s>@trade` (trades), `<s>@bookTicker` (top of book; the
spot payload has no event type or time, so it is dispatched by stream name and stamped on receipt) and
`<s>@kline_<i>` (closed klines). `{"result": null, "id": n}` acknowledges a SUBSCRIBE request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import orjson

from gpt_trader.realtime.models import ParsedFrame, ProviderBar, Reject, StreamType, TradeFrames, truncate_raw
from gpt_trader.realtime.sources.base import (
    DECODE_ERRORS,
    MAX_MS,
    Connection,
    chained_trade_runs,
    decode_each,
    load_frame,
    ms_in_range,
)
from gpt_trader.realtime.sources.trade_scan import scan_binance_trades

NAME = "binance"
DEFAULT_URL = "wss://stream.binance.com:9443"
_MS = 1_000_000
_INTERVAL_SECS = {
    "1s": 1,
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "4h": 14400,
    "1d": 86400,
}


class _Envelope(msgspec.Struct, gc=False):
    stream: str
    data: msgspec.Raw


class _Trade(msgspec.Struct, gc=False):
    s: str
    t: int
    p: float
    q: float
    T: int
    e: str = "trade"


class _TradeEnvelope(msgspec.Struct, gc=False):
    """A combined-stream envelope decoded with its trade payload in one call (the one-trade-per-frame hot path)."""

    stream: str
    data: _Trade


class _AggTrade(msgspec.Struct, gc=False):
    s: str
    a: int
    p: float
    q: float
    T: int


class _BookTicker(msgspec.Struct, gc=False):
    s: str
    b: float
    B: float
    a: float
    A: float
    u: int = 0
    T: int = 0  # futures payloads carry a transaction time; spot does not


class _Kline(msgspec.Struct, gc=False):
    t: int
    s: str
    i: str
    o: float
    h: float
    l: float  # noqa: E741
    c: float
    v: float
    n: int
    x: bool
    q: float = 0.0


class _KlineEvent(msgspec.Struct, gc=False):
    s: str
    k: _Kline


# strict=False: Binance sends numbers as strings ("0.001"); msgspec converts them in C.
_ENVELOPE = msgspec.json.Decoder(_Envelope)
_TRADE = msgspec.json.Decoder(_Trade, strict=False)
_TRADE_ENVELOPE = msgspec.json.Decoder(_TradeEnvelope, strict=False)
_AGG = msgspec.json.Decoder(_AggTrade, strict=False)
_BOOK = msgspec.json.Decoder(_BookTicker, strict=False)
_KLINE = msgspec.json.Decoder(_KlineEvent, strict=False)


def stream_names(symbols: Sequence[str], stream_types: Sequence[StreamType], kline_interval: str = "1m") -> list[str]:
    """Binance stream names for our subscription (symbols are lower case on the wire)."""
    names: list[str] = []
    for symbol in symbols:
        s = symbol.lower().replace("/", "")
        for kind in stream_types:
            names.append(
                {StreamType.TRADES: f"{s}@trade", StreamType.QUOTES: f"{s}@bookTicker"}.get(
                    kind, f"{s}@kline_{kline_interval}"
                )
            )
    return names


def parse_frame(raw: bytes | str, recv_ns: int = 0) -> ParsedFrame:
    """Parse one combined-stream frame; `recv_ns` stamps bookTicker updates, which carry no exchange time."""
    frame = ParsedFrame()
    try:
        env = _ENVELOPE.decode(raw)
    except DECODE_ERRORS:
        return _parse_control(raw, frame)
    stream = env.stream
    kind = stream[stream.find("@") + 1 :]
    try:
        if kind == "trade":
            m = _TRADE.decode(env.data)
            if m.e != "trade" or not _names(stream, m.s):
                frame.rejects.append(Reject("invalid_message", _mismatch(stream, m.e, m.s), truncate_raw(raw)))
            elif m.t < 0:  # trade ids count from 0; negative ones are what aggregate trades' ids map to
                frame.rejects.append(Reject("invalid_message", f"{stream}: negative trade id {m.t}", truncate_raw(raw)))
            else:
                _add_trade(frame, raw, m.s, m.T, m.p, m.q, m.t)
        elif kind == "bookTicker":
            b = _BOOK.decode(env.data)
            if _in_range(frame, raw, b.T, "quote"):
                frame.add_quote(b.s, b.T * _MS if b.T else recv_ns, b.b, b.a, b.B, b.A)
        elif kind == "aggTrade":
            a = _AGG.decode(env.data)
            if not _names(stream, a.s):
                frame.rejects.append(Reject("invalid_message", _mismatch(stream, "aggTrade", a.s), truncate_raw(raw)))
            else:
                _add_trade(frame, raw, a.s, a.T, a.p, a.q, -a.a - 1)  # negative: never collides with trade ids
        elif kind.startswith("kline_"):
            k = _KLINE.decode(env.data).k
            if k.x and _in_range(frame, raw, k.t, "kline"):  # only closed klines are bars; open ones still change
                vwap = k.q / k.v if k.v else k.c
                frame.bars.append(
                    ProviderBar(k.s, k.t * _MS, _INTERVAL_SECS.get(k.i, 60), k.o, k.h, k.l, k.c, k.v, vwap, k.n)
                )
        else:
            frame.rejects.append(Reject("unknown_event", f"unknown stream kind {kind!r}", truncate_raw(raw)))
    except DECODE_ERRORS as exc:
        frame.rejects.append(Reject("invalid_message", f"{stream}: {type(exc).__name__}: {exc}", truncate_raw(raw)))
    return frame


def _names(stream: str, symbol: str) -> bool:
    """Whether an event's symbol is the one its stream is for (`btcusdt@trade` carries BTCUSDT; a stream name
    without its `@<kind>` names none)."""
    at = stream.find("@")
    return at > 0 and stream[:at] == symbol.lower().replace("/", "")


def _in_range(frame: ParsedFrame, raw: bytes | str, t_ms: int, what: str) -> bool:
    """Whether an event's millisecond time fits the pipeline's int64 nanoseconds; if not, a bad timestamp (not a
    crash where the columns are built)."""
    if -MAX_MS <= t_ms <= MAX_MS:
        return True
    frame.rejects.append(Reject("bad_timestamp", f"{what} time {t_ms} ms is out of range", truncate_raw(raw)))
    return False


def _mismatch(stream: str, event: str, symbol: str) -> str:
    return f"{stream}: a {event!r} event for {symbol!r} does not belong on this stream"


def _add_trade(
    frame: ParsedFrame, raw: bytes | str, symbol: str, t_ms: int, price: float, size: float, tid: int
) -> None:
    if _in_range(frame, raw, t_ms, "trade"):
        frame.add_trade(symbol, t_ms * _MS, price, size, tid)


def parse_trade_frames(raws: Sequence[bytes | str], start: int, stop: int | None = None) -> TradeFrames | None:
    """The longest run of frames from `raws[start]` (up to `stop`) that are each one well-formed `<symbol>@trade`
    event, as columns (one trade per frame), exactly as `parse_frame` gives them; None when `raws[start]` is not
    such a frame (it then needs `parse_frame`). Pure.

    Frames in the form Binance sends go through the compiled scanner (`trade_scan`); from a frame outside it, msgspec
    takes over and the run goes on from there."""
    return chained_trade_runs(scan_binance_trades, _decode_trade_frames, raws, start, stop)


def _decode_trade_frames(raws: Sequence[bytes | str], start: int, stop: int | None) -> TradeFrames | None:
    """`parse_trade_frames` through msgspec alone (lists: the runs it gets are mostly short)."""
    envs = decode_each(_TRADE_ENVELOPE.decode, raws, start, stop)
    streams = [e.stream for e in envs]
    # `parse_frame` dispatches on what follows the stream name's first "@"; a run holds a few distinct names.
    other = [s for s in dict.fromkeys(streams) if s[s.find("@") + 1 :] != "trade"]
    trades = [e.data for e in (envs[: min(map(streams.index, other))] if other else envs)]
    # An event that is not a trade, not for its stream's symbol or with a negative id ends the run (`parse_frame`
    # refuses it).
    bad = next((i for i, m in enumerate(trades) if m.e != "trade" or m.t < 0 or not _names(streams[i], m.s)), None)
    if bad is not None:
        del trades[bad:]
    t_ms = [m.T for m in trades]
    n = ms_in_range(t_ms)  # from the first out-of-range time on, `parse_frame` makes it a bad timestamp
    if not n:
        return None
    if n < len(trades):
        del trades[n:], t_ms[n:]
    return TradeFrames(
        start, [1] * n, [m.s for m in trades], [t * _MS for t in t_ms], [m.p for m in trades],
        [m.q for m in trades], [m.t for m in trades],
    )  # fmt: skip


def _parse_control(raw: bytes | str, frame: ParsedFrame) -> ParsedFrame:
    try:
        payload = load_frame(raw)
    except orjson.JSONDecodeError as exc:
        frame.rejects.append(Reject("malformed_json", str(exc), truncate_raw(raw)))
        return frame
    if (isinstance(payload, dict) and ("result" in payload or ("code" in payload and "msg" in payload))) or (
        isinstance(payload, dict) and payload.get("e") == "serverShutdown"
    ):
        frame.control.append(payload)
    else:
        frame.rejects.append(Reject("malformed_frame", "not a combined-stream envelope", truncate_raw(raw)))
    return frame


class BinanceAdapter:
    """Binance combined streams: the subscription is in the URL, so there is no handshake."""

    name = NAME
    ts_precision_ns = 1_000_000  # millisecond timestamps on the wire

    def __init__(self, kline_interval: str = "1m") -> None:
        self.kline_interval = kline_interval

    def endpoint(self, base_url: str, symbols: Sequence[str], stream_types: Sequence[StreamType]) -> str:
        """`<base>/stream?streams=a@trade/b@bookTicker`."""
        names = "/".join(stream_names(symbols, stream_types, self.kline_interval))
        return f"{base_url.rstrip('/')}/stream?streams={names}"

    async def handshake(self, ws: Connection, symbols: Sequence[str], stream_types: Sequence[StreamType]) -> None:
        """Nothing to do: Binance market streams are public and subscribed by URL."""
        return None

    def parse(self, raw: bytes | str, recv_ns: int = 0) -> ParsedFrame:
        """See `parse_frame`."""
        return parse_frame(raw, recv_ns)

    parse_trade_frames = staticmethod(parse_trade_frames)  # the pipeline's batched path for runs of trade frames


def control_reply(request: Any) -> bytes:
    """The server's reply to a SUBSCRIBE/UNSUBSCRIBE request (used by the local exchange)."""
    return orjson.dumps({"result": None, "id": request.get("id") if isinstance(request, dict) else None})
