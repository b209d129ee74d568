"""What every streaming adapter provides: its endpoint, its handshake (auth + subscribe) and a pure frame parser."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import msgspec
import orjson

from gpt_trader.core.errors import SourceError
from gpt_trader.realtime.models import ParsedFrame, StreamType

T = TypeVar("T")


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


def decode_trade_run(
    decode: Callable[[bytes | str], list[T]], raws: Sequence[bytes | str], start: int, stop: int | None
) -> tuple[list[int], list[T]]:
    """From `raws[start]` (up to `stop`), the frames that `decode` (a trades-only decoder) accepts with at least one
    trade: each one's trade count, and all their trades in order. Stops at the first frame it refuses."""
    counts: list[int] = []
    trades: list[T] = []
    for k in range(start, len(raws) if stop is None else stop):
        try:
            batch = decode(raws[k])
        except (msgspec.ValidationError, msgspec.DecodeError):
            break
        if not batch:
            break
        counts.append(len(batch))
        trades += batch
    return counts, trades
