"""Polygon stocks websocket (wss://socket.polygon.io/stocks).

Wire format: JSON arrays of events tagged by `ev`: `status` (connected, auth_success/auth_failed, success),
`T` trades (`sym`, `i` id string, `x` exchange, `p`, `s`, `t` Unix ms), `Q` quotes (`bp`/`bs`/`ap`/`as`),
`A`/`AM` second/minute aggregates (`s`/`e` window start/end ms). Client sends `{"action":"auth","params":KEY}`
then `{"action":"subscribe","params":"T.AAPL,Q.AAPL"}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec
import numpy as np
import orjson
from pydantic import SecretStr

from gpt_trader.core.errors import SourceError
from gpt_trader.realtime.models import ParsedFrame, ProviderBar, Reject, StreamType, TradeFrames, truncate_raw
from gpt_trader.realtime.sources.base import (
    DECODE_ERRORS,
    Connection,
    chained_trade_runs,
    decode_trade_run,
    load_frame,
    message_raw,
    ms_in_range,
    recv_json,
)
from gpt_trader.realtime.sources.base import MAX_MS as _MAX_MS
from gpt_trader.realtime.sources.trade_scan import scan_polygon_trades

NAME = "polygon"
DEFAULT_URL = "wss://socket.polygon.io/stocks"
_MS = 1_000_000


class _Trade(msgspec.Struct, tag_field="ev", tag="T", gc=False):
    sym: str
    p: float
    s: float
    t: int
    i: str | int = ""
    x: int = 0


class _Quote(msgspec.Struct, tag_field="ev", tag="Q", gc=False):
    sym: str
    t: int
    bp: float
    ap: float
    bs: float = 0.0
    as_: float = msgspec.field(default=0.0, name="as")


class _Second(msgspec.Struct, tag_field="ev", tag="A", gc=False):
    sym: str
    o: float
    h: float
    l: float  # noqa: E741
    c: float
    v: float
    s: int
    e: int
    vw: float = 0.0
    z: int = 0


class _Minute(_Second, tag="AM"):
    pass


class _Status(msgspec.Struct, tag_field="ev", tag="status"):
    status: str = ""
    message: str = ""


_KNOWN = _Trade | _Quote | _Second | _Minute | _Status
_DECODER = msgspec.json.Decoder(list[_KNOWN])
_TAGS = {"T", "Q", "A", "AM", "status"}


class _RunTrade(msgspec.Struct, gc=False, kw_only=True):
    """`_Trade` (same fields, types and defaults) with its fields in the order Polygon sends them: msgspec matches
    keys fastest in declaration order. Only the batched path decodes it, and never encodes one. The tag is a
    required field here: a tagged struct decoded outside a union takes an event without its tag, which `_DECODER`
    refuses."""

    ev: Literal["T"]
    sym: str
    x: int = 0
    i: str | int = ""
    p: float
    s: float
    t: int


# A frame of trades only decodes with this one exactly as with `_DECODER` (same `_Trade` rules); anything else fails.
_TRADES_DECODER = msgspec.json.Decoder(list[_RunTrade])


def trade_key(x: int, i: str | int) -> int:
    """A trade's dedup key: `hash((x, i))`, an id string of digits taken as its int (Polygon sends ids as strings,
    which the compiled scanner reads as ints: "12" and 12 name one trade either way, "012" stays a string)."""
    if type(i) is str and 0 < len(i) <= 18 and i.isascii() and i.isdigit() and (len(i) == 1 or i[0] != "0"):
        return hash((x, int(i)))
    return hash((x, i))


def parse_trade_frames(raws: Sequence[bytes | str], start: int, stop: int | None = None) -> TradeFrames | None:
    """The longest run of frames from `raws[start]` (up to `stop`) that hold only well-formed trades (at least
    one), as columns; None when `raws[start]` is not such a frame (it then needs `parse_frame`). Pure.

    Frames in the form Polygon sends go through the compiled scanner (`trade_scan`, same columns); a frame outside
    it goes to msgspec, and the run goes on from there."""
    return chained_trade_runs(scan_polygon_trades, _decode_trade_frames, raws, start, stop)


def _decode_trade_frames(raws: Sequence[bytes | str], start: int, stop: int) -> TradeFrames | None:
    """`parse_trade_frames` through msgspec alone."""
    counts, trades = decode_trade_run(_TRADES_DECODER.decode, raws, start, stop)
    if not counts:
        return None
    t_ms = [e.t for e in trades]
    in_range = ms_in_range(t_ms)
    if in_range < len(trades):  # keep the frames before the first out-of-range trade's
        good, m = 0, 0
        while m + counts[good] <= in_range:
            m += counts[good]
            good += 1
        if not good:
            return None
        counts, trades, t_ms = counts[:good], trades[:m], t_ms[:m]
    ts = np.array(t_ms, dtype=np.int64)
    ts *= _MS
    return TradeFrames(
        start, counts, [e.sym for e in trades], ts, np.array([e.p for e in trades], dtype=np.float64),
        np.array([e.s for e in trades], dtype=np.float64), [trade_key(e.x, e.i) for e in trades],
    )  # fmt: skip


def parse_frame(raw: bytes | str) -> ParsedFrame:
    """Parse one Polygon frame (an array of events)."""
    frame = ParsedFrame()
    try:
        events = _DECODER.decode(raw)
    except DECODE_ERRORS:
        return _parse_slow(raw, frame)
    trades = [e for e in events if type(e) is _Trade]
    if trades:
        t_ms = [e.t for e in trades]
        if min(t_ms) < -_MAX_MS or max(t_ms) > _MAX_MS:
            for e in events:  # one by one: the trades whose time does not fit become rejects
                _add_other(frame, e)
            return frame
        frame.t_symbol.extend([e.sym for e in trades])
        frame.t_ts.extend([t * _MS for t in t_ms])
        frame.t_price.extend([e.p for e in trades])
        frame.t_size.extend([e.s for e in trades])
        frame.t_id.extend([trade_key(e.x, e.i) for e in trades])  # ints: not GC-tracked in the dedup window
    if len(trades) != len(events):
        for e in events:
            if type(e) is not _Trade:
                _add_other(frame, e)
    return frame


def _add_other(frame: ParsedFrame, e: Any) -> None:
    kind = type(e)
    if kind is _Status:
        frame.control.append({"ev": "status", "status": e.status, "message": e.message})
        return
    # The pipeline keeps nanoseconds in int64 columns: a time beyond them is a bad timestamp, not a crash later on.
    times = (e.s, e.e) if kind in (_Second, _Minute) else (e.t,)
    if not all(-_MAX_MS <= t <= _MAX_MS for t in times):
        detail = f"{kind.__struct_config__.tag} event time {max(times, key=abs)} ms is out of range"
        frame.rejects.append(Reject("bad_timestamp", detail, truncate_raw(msgspec.json.encode(e))))
        return
    if kind is _Trade:
        frame.add_trade(e.sym, e.t * _MS, e.p, e.s, trade_key(e.x, e.i))
    elif kind is _Quote:
        frame.add_quote(e.sym, e.t * _MS, e.bp, e.ap, e.bs, e.as_)
    elif kind in (_Second, _Minute):
        secs = max(1, (e.e - e.s) // 1000)
        # `z` is the average trade size, not a count: the aggregate carries no trade count (0 = unknown).
        frame.bars.append(ProviderBar(e.sym, e.s * _MS, secs, e.o, e.h, e.l, e.c, e.v, e.vw or e.c, 0))


def _parse_slow(raw: bytes | str, frame: ParsedFrame) -> ParsedFrame:
    try:
        payload = load_frame(raw)
    except orjson.JSONDecodeError as exc:
        frame.rejects.append(Reject("malformed_json", str(exc), truncate_raw(raw)))
        return frame
    if isinstance(payload, dict):
        payload = [payload]
    if not isinstance(payload, list):
        frame.rejects.append(Reject("malformed_frame", "frame is not a JSON array", truncate_raw(raw)))
        return frame
    for item in payload:
        if not isinstance(item, dict):
            frame.rejects.append(Reject("malformed_message", "event is not an object", message_raw(item, raw)))
            continue
        try:
            event = msgspec.convert(item, _KNOWN)
        except msgspec.ValidationError as exc:
            tag = item.get("ev")
            reason = "invalid_message" if isinstance(tag, str) and tag in _TAGS else "unknown_event"
            frame.rejects.append(Reject(reason, str(exc), message_raw(item, raw)))
            continue
        _add_other(frame, event)
    return frame


_CHANNEL = {StreamType.TRADES: "T", StreamType.QUOTES: "Q", StreamType.BARS: "A"}


class PolygonAdapter:
    """Polygon stocks cluster: auth with the API key, subscribe to `T.`/`Q.`/`A.` channels."""

    name = NAME
    ts_precision_ns = 1_000_000  # millisecond timestamps on the wire

    def __init__(self, api_key: SecretStr, *, handshake_timeout_secs: float = 10.0) -> None:
        self._key = api_key
        self._timeout = handshake_timeout_secs

    def __repr__(self) -> str:
        return "PolygonAdapter(api_key=***)"

    def endpoint(self, base_url: str, symbols: Sequence[str], stream_types: Sequence[StreamType]) -> str:
        """The cluster URL, as configured."""
        return base_url

    async def handshake(self, ws: Connection, symbols: Sequence[str], stream_types: Sequence[StreamType]) -> None:
        """`connected` -> auth -> `auth_success` -> subscribe -> `success`."""
        await self._expect(ws, "connected")
        await ws.send(orjson.dumps({"action": "auth", "params": self._key.get_secret_value()}).decode())
        await self._expect(ws, "auth_success")
        params = ",".join(f"{_CHANNEL[k]}.{s}" for k in stream_types for s in symbols)
        await ws.send(orjson.dumps({"action": "subscribe", "params": params}).decode())
        await self._expect(ws, "success")

    async def _expect(self, ws: Connection, status: str) -> None:
        reply = await recv_json(ws, NAME, self._timeout)
        for item in reply if isinstance(reply, list) else [reply]:
            if isinstance(item, dict) and item.get("ev") == "status":
                if item.get("status") == status:
                    return
                if item.get("status") in ("auth_failed", "error"):
                    raise SourceError(f"polygon: {item.get('status')}: {item.get('message')}")
        raise SourceError(f"polygon: expected status {status!r} during the handshake, got {reply!r:.200}")

    def parse(self, raw: bytes | str) -> ParsedFrame:
        """See `parse_frame`."""
        return parse_frame(raw)

    parse_trade_frames = staticmethod(parse_trade_frames)  # the pipeline's batched path for runs of trade frames
