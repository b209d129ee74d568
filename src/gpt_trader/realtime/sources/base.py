"""What every streaming adapter provides: its endpoint, its handshake (auth + subscribe) and a pure frame parser."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import msgspec
import orjson

from gpt_trader.core.errors import SourceError
from gpt_trader.realtime.models import ParsedFrame, StreamType, TradeFrames, truncate_raw

T = TypeVar("T")
_MS = 1_000_000
# Millisecond times whose nanoseconds fit in int64 (the pipeline's columns); a trade beyond is a bad timestamp.
MAX_MS = (2**63 - 1) // _MS
# What a msgspec decoder raises on a frame it does not take: besides invalid JSON and the wrong shape, JSON nested
# deeper than its recursion limit (an unknown field may hold anything) raises RecursionError.
DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, RecursionError)


class Connection(Protocol):
    """The slice of a websocket client connection the handshakes use (websockets' ClientConnection fits)."""

    async def send(self, message: str | bytes) -> None:
        """Send one text or binary frame."""
        ...

    async def recv(self) -> str | bytes:
        """Receive one frame."""
        ...


class StreamAdapter(Protocol):
    """One provider's websocket protocol: `connect()`-side edge in `handshake`, pure `parse`."""

    name: str
    ts_precision_ns: int

    def endpoint(self, base_url: str, symbols: Sequence[str], stream_types: Sequence[StreamType]) -> str:
        """The URL to open (some providers put the subscription in the path or query)."""
        ...

    async def handshake(self, ws: Connection, symbols: Sequence[str], stream_types: Sequence[StreamType]) -> None:
        """Authenticate and subscribe; raise `SourceError` naming the provider's complaint."""
        ...

    def parse(self, raw: bytes | str) -> ParsedFrame:
        """Parse one frame; never raises (bad messages become `rejects`)."""
        ...


async def recv_json(ws: Connection, provider: str, timeout_secs: float) -> Any:
    """Receive and decode one control frame during a handshake."""
    import asyncio

    try:
        raw = await asyncio.wait_for(ws.recv(), timeout_secs)
    except TimeoutError:
        raise SourceError(f"{provider}: no reply within {timeout_secs}s during the handshake") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise SourceError(f"{provider}: handshake reply is not JSON: {raw!r:.200}") from None


def chained_trade_runs(
    scan: Callable[[Sequence[bytes | str], int, int], TradeFrames | None],
    decode: Callable[[Sequence[bytes | str], int, int], TradeFrames | None],
    raws: Sequence[bytes | str],
    start: int,
    stop: int | None,
) -> TradeFrames | None:
    """The longest run of trade frames from `raws[start]`: the compiled scanner's runs (`trade_scan`), and from a
    frame it does not take, the msgspec decoder's (`decode`), one after the other, as one."""
    stop = len(raws) if stop is None else stop
    parts: list[TradeFrames] = []
    i = start
    while i < stop:
        part = scan(raws, i, stop) or decode(raws, i, stop)
        if part is None:
            break
        parts.append(part)
        i = part.end
    return TradeFrames.joined(parts) if parts else None


def decode_trade_run(
    decode: Callable[[bytes | str], list[T]], raws: Sequence[bytes | str], start: int, stop: int | None
) -> tuple[list[int], list[T]]:
    """From `raws[start]` (up to `stop`), the frames that `decode` (a trades-only decoder) accepts with at least one
    trade: each one's trade count, and all their trades in order. Stops at the first frame it refuses."""
    counts: list[int] = []
    trades: list[T] = []
    for batch in decode_each(decode, raws, start, stop):
        if not batch:
            break
        counts.append(len(batch))
        trades += batch
    return counts, trades


def decode_each(
    decode: Callable[[bytes | str], T], raws: Sequence[bytes | str], start: int, stop: int | None
) -> list[T]:
    """`decode` of each frame from `raws[start]` (up to `stop`), stopping at the first frame it refuses. Frame by
    frame on purpose, not as one joined JSON array: joining is no faster (msgspec's cost is per message either
    way), and a frame holding several values, or part of one, could shift what the others decode to."""
    out: list[T] = []
    for k in range(start, len(raws) if stop is None else stop):
        try:
            out.append(decode(raws[k]))
        except DECODE_ERRORS:
            break
    return out


def ms_in_range(t_ms: list[int]) -> int:
    """How many of the millisecond times, from the first, have nanoseconds that fit in int64 (see `MAX_MS`)."""
    # Builtin min/max: cheaper than numpy's per-call cost on a few times, and no overflow on huge ones.
    if not t_ms or (min(t_ms) >= -MAX_MS and max(t_ms) <= MAX_MS):
        return len(t_ms)
    return next(k for k, t in enumerate(t_ms) if not -MAX_MS <= t <= MAX_MS)


def load_frame(raw: bytes | str) -> Any:
    """A frame's JSON as Python objects, for the message-by-message paths; raises orjson's JSONDecodeError (a
    ValueError) when it is not JSON.

    orjson refuses valid JSON holding a number beyond a double (`1e400`): such a frame is read again with the
    stdlib, numbers as orjson reads them (that one infinite), so that only the message holding it is refused (its
    price or size out of range, its time or id of the wrong type) and the good messages beside it are kept. What
    orjson cannot write back (a lone surrogate, nesting past its limit) stays refused as a whole: dead letters are
    written with it.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        error = exc
    try:
        payload = json.loads(raw, parse_constant=_not_json, parse_int=_json_int)
        orjson.dumps(payload)
    except (ValueError, TypeError, RecursionError):  # JSONEncodeError is a TypeError
        raise error from None
    return payload


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_int(text: str) -> int | float:
    """An integer as orjson reads it: exact within 64 bits, else the nearest double (infinite past its range; no
    4300-digit `int()` limit to trip on)."""
    if len(text) <= 20:
        value = int(text)
        if -(2**63) <= value < 2**64:
            return value
    return float(text)


def message_raw(item: Any, raw: bytes | str) -> str:
    """One message of a frame as text for its dead letter: re-encoded alone, or the frame it came in where orjson
    cannot write it (nested deeper than its limit)."""
    try:
        return truncate_raw(orjson.dumps(item))
    except orjson.JSONEncodeError:
        return truncate_raw(raw)
