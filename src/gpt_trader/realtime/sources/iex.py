"""IEX TOPS / Last (the IEX API 1.0 message shapes: `last` and `tops` objects).

IEX retired its public socket.io endpoint (ws-api.iextrading.com/1.0/tops) and IEX Cloud's SSE streams, so no
production URL is reachable today; the adapter speaks the documented message shapes over a plain websocket, the way
the local exchange serves them: subscribe with the socket.io event payload `["subscribe", "aapl,spy"]`, then receive
JSON arrays (or single objects) of
- Last: `{"symbol","price","size","time" (ms),"seq"}` -> a trade;
- TOPS: `{"symbol","bidPrice","bidSize","askPrice","askSize","lastUpdated" (ms),...}` -> a quote (its
  `lastSale*` fields repeat the Last message, so they are not counted again as a trade).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import orjson

from gpt_trader.realtime.models import ParsedFrame, Reject, StreamType, truncate_raw
from gpt_trader.realtime.sources.base import MAX_MS, Connection, load_frame, message_raw

NAME = "iex"
DEFAULT_URL = "wss://ws-api.iextrading.com/1.0/tops"
_MS = 1_000_000


def _num(item: dict[str, Any], key: str) -> float:
    value = item[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{key} is {type(value).__name__}, not a number")
    return float(value)


class _BadTime(ValueError):
    """A message time that is not a finite millisecond count whose nanoseconds fit in int64."""


def _ns(ms: float) -> int:
    # The pipeline keeps nanoseconds in int64 columns: a time beyond them is a bad timestamp, not a crash later on.
    if not math.isfinite(ms) or not -MAX_MS <= int(ms) <= MAX_MS:
        raise _BadTime(f"time {ms!r} ms is not a millisecond time within the int64 nanosecond range")
    return int(ms) * _MS


def parse_frame(raw: bytes | str) -> ParsedFrame:
    """Parse one IEX frame (object or array of Last/TOPS objects)."""
    frame = ParsedFrame()
    try:
        payload = load_frame(raw)
    except orjson.JSONDecodeError as exc:
        frame.rejects.append(Reject("malformed_json", str(exc), truncate_raw(raw)))
        return frame
    items = payload if isinstance(payload, list) else [payload]
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("symbol"), str):
            frame.rejects.append(Reject("malformed_message", "not an object with a 'symbol'", message_raw(item, raw)))
            continue
        try:
            if "bidPrice" in item:
                ts = _ns(_num(item, "lastUpdated"))
                frame.add_quote(
                    item["symbol"], ts, _num(item, "bidPrice"), _num(item, "askPrice"),
                    _num(item, "bidSize"), _num(item, "askSize"),
                )  # fmt: skip
            elif "price" in item and "time" in item:
                time_ms = _num(item, "time")
                ts = _ns(time_ms)
                seq = item.get("seq")
                # A bool is no sequence number (`true` would dedup against seq 1): keyed by content, as a missing one.
                trade_id = seq if type(seq) is int else hash((int(time_ms), item["price"], item.get("size")))
                frame.add_trade(item["symbol"], ts, _num(item, "price"), _num(item, "size"), trade_id)
            elif item.get("type") in ("subscribed", "status"):
                frame.control.append(item)
            else:
                frame.rejects.append(
                    Reject("unknown_event", "neither a Last nor a TOPS message", message_raw(item, raw))
                )
        except _BadTime as exc:
            frame.rejects.append(Reject("bad_timestamp", str(exc), message_raw(item, raw)))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            frame.rejects.append(Reject("invalid_message", f"{type(exc).__name__}: {exc}", message_raw(item, raw)))
    return frame


class IexAdapter:
    """IEX TOPS/Last over a websocket: no keys; subscribe with the socket.io-style event payload."""

    name = NAME
    ts_precision_ns = 1_000_000  # millisecond timestamps on the wire

    def endpoint(self, base_url: str, symbols: Sequence[str], stream_types: Sequence[StreamType]) -> str:
        """The configured URL."""
        return base_url

    async def handshake(self, ws: Connection, symbols: Sequence[str], stream_types: Sequence[StreamType]) -> None:
        """Send `["subscribe", "aapl,spy"]` (IEX 1.0 symbol lists are comma-separated, case-insensitive)."""
        await ws.send(orjson.dumps(["subscribe", ",".join(s.lower() for s in symbols)]).decode())

    def parse(self, raw: bytes | str) -> ParsedFrame:
        """See `parse_frame`."""
        return parse_frame(raw)
