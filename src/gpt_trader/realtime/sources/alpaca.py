"""Alpaca Market Data v2 stream (wss://stream.data.alpaca.markets/v2/{iex|sip}).

Wire format: every server frame is a JSON array of messages tagged by `T`: control (`success`, `error`,
`subscription`) and data (`t` trade, `q` quote, `b` minute bar, plus `d`/`u`/`s`/`l`/`c`/`x` which we accept and
ignore). Client sends `{"action":"auth","key":..,"secret":..}` then `{"action":"subscribe","trades":[..],...}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec
import numpy as np
import orjson

from gpt_trader.core.errors import SourceError
from gpt_trader.data.sources.credentials import AlpacaCredentials
from gpt_trader.realtime.models import ParsedFrame, ProviderBar, Reject, StreamType, TradeFrames, truncate_raw
from gpt_trader.realtime.sources.base import (
    DECODE_ERRORS,
    Connection,
    chained_trade_runs,
    decode_trade_run,
    load_frame,
    message_raw,
    recv_json,
)
from gpt_trader.realtime.sources.trade_scan import scan_alpaca_trades
from gpt_trader.realtime.timestamps import parse_rfc3339_array, parse_rfc3339_ns

NAME = "alpaca"
DEFAULT_URL = "wss://stream.data.alpaca.markets/v2/iex"


# gc=False: these structs hold no containers that could form cycles, and skipping GC tracking is most of msgspec's
# speed advantage on 100-message frames.
class _Trade(msgspec.Struct, tag_field="T", tag="t", gc=False):
    S: str
    p: float
    s: float
    t: str
    i: int | str = 0
    x: str = ""


class _Quote(msgspec.Struct, tag_field="T", tag="q", gc=False):
    S: str
    t: str
    bp: float
    ap: float
    bs: float = 0.0
    as_: float = msgspec.field(default=0.0, name="as")


class _Bar(msgspec.Struct, tag_field="T", tag="b", gc=False):
    S: str
    o: float
    h: float
    l: float  # noqa: E741  (the provider's field name)
    c: float
    v: float
    t: str
    n: int = 0
    vw: float = 0.0


class _Success(msgspec.Struct, tag_field="T", tag="success"):
    msg: str = ""


class _Error(msgspec.Struct, tag_field="T", tag="error"):
    code: int = 0
    msg: str = ""


class _Subscription(msgspec.Struct, tag_field="T", tag="subscription"):
    trades: list[str] = []
    quotes: list[str] = []
    bars: list[str] = []


def _ignored(tag: str) -> type:
    return msgspec.defstruct(f"_Ignored_{tag}", [], tag_field="T", tag=tag)


# Documented message types we do not use (daily/updated bars, statuses, LULDs, corrections, cancel errors):
# known, so they neither break the fast path nor land in the dead-letter stream.
_IGNORED = tuple(_ignored(tag) for tag in ("d", "u", "s", "l", "c", "x"))
_KNOWN: Any = _Trade | _Quote | _Bar | _Success | _Error | _Subscription
for _cls in _IGNORED:
    _KNOWN = _KNOWN | _cls
_DECODER = msgspec.json.Decoder(list[_KNOWN])


class _RunTrade(msgspec.Struct, gc=False, kw_only=True):
    """`_Trade` (same fields, types and defaults) with its fields in the order Alpaca sends them: msgspec matches
    keys fastest in declaration order. Only the batched path decodes it, and never encodes one (dead letters show
    `_Trade`'s order). The tag is a required field here: a tagged struct decoded outside a union takes a message
    without its tag, which `_DECODER` refuses."""

    T: Literal["t"]
    S: str
    i: int | str = 0
    x: str = ""
    p: float
    s: float
    t: str


# A frame of trades only decodes with this one exactly as with `_DECODER` (same `_Trade` rules); anything else fails.
_TRADES_DECODER = msgspec.json.Decoder(list[_RunTrade])


def parse_trade_frames(raws: Sequence[bytes | str], start: int, stop: int | None = None) -> TradeFrames | None:
    """The longest run of frames from `raws[start]` (up to `stop`) that hold only well-formed trades (at least
    one), as columns; None when `raws[start]` is not such a frame (it then needs `parse_frame`). Pure.

    Frames in the form Alpaca sends go through the compiled scanner (`trade_scan`, same columns); a frame outside
    it (a string id, say) goes to msgspec, and the run goes on from there."""
    return chained_trade_runs(scan_alpaca_trades, _decode_trade_frames, raws, start, stop)


def _decode_trade_frames(raws: Sequence[bytes | str], start: int, stop: int) -> TradeFrames | None:
    """`parse_trade_frames` through msgspec alone."""
    counts, trades = decode_trade_run(_TRADES_DECODER.decode, raws, start, stop)
    while counts:
        try:
            ts = parse_rfc3339_array([m.t for m in trades])
        except (ValueError, IndexError):
            # Keep the frames before the first one with a bad timestamp (that one goes through `parse_frame`).
            good, m = 0, 0
            for c in counts:
                try:
                    parse_rfc3339_array([x.t for x in trades[m : m + c]])
                except (ValueError, IndexError):
                    break
                good, m = good + 1, m + c
            counts, trades = counts[:good], trades[:m]
            continue
        return TradeFrames(
            start, counts, [m.S for m in trades], ts, np.array([m.p for m in trades], dtype=np.float64),
            np.array([m.s for m in trades], dtype=np.float64), [hash((m.x, m.i)) for m in trades],
        )  # fmt: skip
    return None


def parse_frame(raw: bytes | str) -> ParsedFrame:
    """Parse one Alpaca v2 frame; malformed frames and unknown or invalid messages become rejects."""
    frame = ParsedFrame()
    try:
        messages = _DECODER.decode(raw)
    except DECODE_ERRORS:
        return _parse_slow(raw, frame)
    trades = [m for m in messages if type(m) is _Trade]
    if len(trades) == len(messages):
        _add_trades(frame, trades, raw)
        return frame
    if trades:
        _add_trades(frame, trades, raw)
    for m in messages:
        kind = type(m)
        if kind is _Trade:
            continue
        _add_other(frame, m, raw)
    return frame


def _add_trades(frame: ParsedFrame, trades: list[_Trade], raw: bytes | str) -> None:
    try:
        ts = parse_rfc3339_array([m.t for m in trades])
    except (ValueError, IndexError):
        for m in trades:  # find the bad one(s) without losing the good ones
            _add_other(frame, m, raw)
        return
    if not frame.t_ts:
        frame.t_ts_array = ts
    frame.t_ts.extend(ts.tolist())
    frame.t_symbol.extend([m.S for m in trades])
    frame.t_price.extend([m.p for m in trades])
    frame.t_size.extend([m.s for m in trades])
    # Trade ids are unique per exchange, so the exchange code is part of the key; hashed to an int because a
    # dedup window of 100k tuples would be GC-tracked and make every collection crawl.
    frame.t_id.extend([hash((m.x, m.i)) for m in trades])


def _add_other(frame: ParsedFrame, m: Any, raw: bytes | str) -> None:
    kind = type(m)
    try:
        if kind is _Trade:
            frame.add_trade(m.S, parse_rfc3339_ns(m.t), m.p, m.s, hash((m.x, m.i)))
        elif kind is _Quote:
            frame.add_quote(m.S, parse_rfc3339_ns(m.t), m.bp, m.ap, m.bs, m.as_)
        elif kind is _Bar:
            frame.bars.append(ProviderBar(m.S, parse_rfc3339_ns(m.t), 60, m.o, m.h, m.l, m.c, m.v, m.vw or m.c, m.n))
        elif kind in (_Success, _Error, _Subscription):
            frame.control.append({"T": kind.__struct_config__.tag, **msgspec.structs.asdict(m)})
    except (ValueError, IndexError) as exc:
        frame.rejects.append(Reject("bad_timestamp", str(exc), truncate_raw(msgspec.json.encode(m))))


def _parse_slow(raw: bytes | str, frame: ParsedFrame) -> ParsedFrame:
    """Message-by-message fallback so one bad message costs only itself."""
    try:
        payload = load_frame(raw)
    except orjson.JSONDecodeError as exc:
        frame.rejects.append(Reject("malformed_json", str(exc), truncate_raw(raw)))
        return frame
    if not isinstance(payload, list):
        frame.rejects.append(Reject("malformed_frame", "frame is not a JSON array", truncate_raw(raw)))
        return frame
    for item in payload:
        if not isinstance(item, dict) or "T" not in item:
            frame.rejects.append(
                Reject("malformed_message", "message is not an object with 'T'", message_raw(item, raw))
            )
            continue
        try:
            message = msgspec.convert(item, _KNOWN)
        except msgspec.ValidationError as exc:
            tag = item.get("T")
            known = isinstance(tag, str) and tag in {
                "t",
                "q",
                "b",
                "success",
                "error",
                "subscription",
                "d",
                "u",
                "s",
                "l",
                "c",
                "x",
            }
            reason = "invalid_message" if known else "unknown_event"
            frame.rejects.append(Reject(reason, str(exc), message_raw(item, raw)))
            continue
        _add_other(frame, message, raw)
    return frame


class AlpacaAdapter:
    """Alpaca v2 stream: auth with the key pair, subscribe to trades/quotes/bars."""

    name = NAME
    ts_precision_ns = 1  # nanosecond RFC 3339 timestamps on the wire

    def __init__(self, credentials: AlpacaCredentials, *, handshake_timeout_secs: float = 10.0) -> None:
        self._credentials = credentials
        self._timeout = handshake_timeout_secs

    def __repr__(self) -> str:
        return "AlpacaAdapter(credentials=***)"

    def endpoint(self, base_url: str, symbols: Sequence[str], stream_types: Sequence[StreamType]) -> str:
        """Alpaca's URL carries the feed in the path; the configured URL is used as is."""
        return base_url

    async def handshake(self, ws: Connection, symbols: Sequence[str], stream_types: Sequence[StreamType]) -> None:
        """`connected` -> auth -> `authenticated` -> subscribe -> `subscription`."""
        await self._expect(ws, "success", "connected")
        await ws.send(
            orjson.dumps(
                {
                    "action": "auth",
                    "key": self._credentials.key_id.get_secret_value(),
                    "secret": self._credentials.secret_key.get_secret_value(),
                }
            ).decode()
        )
        await self._expect(ws, "success", "authenticated")
        request: dict[str, Any] = {"action": "subscribe"}
        for kind in stream_types:
            request[kind.value] = list(symbols)
        await ws.send(orjson.dumps(request).decode())
        await self._expect(ws, "subscription", None)

    async def _expect(self, ws: Connection, tag: str, msg: str | None) -> None:
        reply = await recv_json(ws, NAME, self._timeout)
        items = reply if isinstance(reply, list) else [reply]
        for item in items:
            if not isinstance(item, dict):
                continue
            if item.get("T") == "error":
                raise SourceError(f"alpaca: stream error {item.get('code')}: {item.get('msg')}")
            if item.get("T") == tag and (msg is None or item.get("msg") == msg):
                return
        raise SourceError(f"alpaca: expected {tag}{'/' + msg if msg else ''} during the handshake, got {reply!r:.200}")

    def parse(self, raw: bytes | str) -> ParsedFrame:
        """See `parse_frame`."""
        return parse_frame(raw)

    parse_trade_frames = staticmethod(parse_trade_frames)  # the pipeline's batched path for runs of trade frames
