"""The real-time vocabulary: sources, stream types, stream configs and the columnar frames adapters produce.

Adapters parse a websocket frame into a `ParsedFrame` of plain Python lists (one entry per message, columnar) so the
hot path never builds one object per tick; timestamps are integer nanoseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt


class DataSource(StrEnum):
    """Where a stream comes from. REPLAY streams the bundled real bars as ticks; SIMULATED streams seeded bars."""

    ALPACA = "alpaca"
    BINANCE = "binance"
    POLYGON = "polygon"
    IEX = "iex"
    SIMULATED = "simulated"
    REPLAY = "replay"


class StreamType(StrEnum):
    """What to subscribe to."""

    TRADES = "trades"
    QUOTES = "quotes"
    BARS = "bars"


@dataclass(frozen=True)
class StreamConfig:
    """One source's subscription: symbols and stream types; earlier configs win failover priority.

    `url` overrides the endpoint (default: the provider's production URL, or $GPT_TRADER_REALTIME__ENDPOINTS__<SOURCE>);
    `priority` breaks ties explicitly (lower is preferred; default: order in the list).
    """

    source: DataSource
    symbols: list[str]
    stream_types: list[StreamType] = field(default_factory=lambda: [StreamType.TRADES, StreamType.QUOTES])
    url: str | None = None
    priority: int | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ValueError(f"StreamConfig for {self.source} needs at least one symbol")
        object.__setattr__(self, "source", DataSource(self.source))
        object.__setattr__(self, "symbols", [s.strip().upper() for s in self.symbols])
        object.__setattr__(self, "stream_types", [StreamType(t) for t in self.stream_types])

    @property
    def label(self) -> str:
        """A unique, readable name for this feed (metrics label, log name)."""
        return self.name or self.source.value


@dataclass(frozen=True, slots=True)
class Reject:
    """One unusable message: why, and the raw text (truncated) for the dead-letter stream."""

    reason: str
    detail: str
    raw: str


@dataclass(frozen=True, slots=True)
class ProviderBar:
    """A bar the provider computed (Alpaca `b`, Polygon `A`/`AM`, Binance closed kline)."""

    symbol: str
    ts_ns: int
    timeframe_secs: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float
    trades: int


@dataclass(slots=True)
class ParsedFrame:
    """Everything in one websocket frame, columnar. Trade ids are whatever the provider uses (int or str)."""

    t_symbol: list[str] = field(default_factory=list)
    t_ts: list[int] = field(default_factory=list)
    t_price: list[float] = field(default_factory=list)
    t_size: list[float] = field(default_factory=list)
    t_id: list[Any] = field(default_factory=list)
    q_symbol: list[str] = field(default_factory=list)
    q_ts: list[int] = field(default_factory=list)
    q_bid: list[float] = field(default_factory=list)
    q_ask: list[float] = field(default_factory=list)
    q_bid_size: list[float] = field(default_factory=list)
    q_ask_size: list[float] = field(default_factory=list)
    bars: list[ProviderBar] = field(default_factory=list)
    control: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    # Optional: `t_ts` as an int64 numpy array, when the parser built one anyway (the pipeline then skips the
    # list -> array conversion). Must equal `t_ts` when set; not part of equality.
    t_ts_array: Any = field(default=None, compare=False, repr=False)

    @property
    def n_trades(self) -> int:
        """Number of trades in the frame."""
        return len(self.t_ts)

    @property
    def n_quotes(self) -> int:
        """Number of quotes in the frame."""
        return len(self.q_ts)

    def add_trade(self, symbol: str, ts: int, price: float, size: float, trade_id: Any) -> None:
        """Append one trade (slow path: fallback parsing and tests)."""
        self.t_symbol.append(symbol)
        self.t_ts.append(ts)
        self.t_price.append(price)
        self.t_size.append(size)
        self.t_id.append(trade_id)

    def add_quote(self, symbol: str, ts: int, bid: float, ask: float, bid_size: float, ask_size: float) -> None:
        """Append one quote."""
        self.q_symbol.append(symbol)
        self.q_ts.append(ts)
        self.q_bid.append(bid)
        self.q_ask.append(ask)
        self.q_bid_size.append(bid_size)
        self.q_ask_size.append(ask_size)


@dataclass(slots=True)
class TradeFrames:
    """The trades of consecutive trade-only frames `raws[start:start + len(counts)]` of a batch, as columns in
    frame order: exactly the `t_*` columns an adapter's `parse_trade_frames` gives each of them, concatenated (what its
    `parse_trade_frames` returns for the pipeline's batched path). `ts`, `price` and `size` are int64/float64 numpy
    arrays, or lists of Python ints/floats (Binance: its runs of one-trade frames are mostly a handful long, where
    building arrays costs more than the lists it saves)."""

    start: int
    counts: list[int]  # trades per frame (each at least 1)
    symbol: list[str]
    ts: npt.NDArray[np.int64] | list[int]
    price: npt.NDArray[np.float64] | list[float]
    size: npt.NDArray[np.float64] | list[float]
    ids: list[Any]
    # Each trade's symbol as a number, by first appearance in these frames (`names[code]` is `symbol`), where the
    # parser numbered them already (the compiled scanner): the pipeline then need not number them again.
    codes: npt.NDArray[np.intp] | None = None
    names: list[str] | None = None

    @property
    def end(self) -> int:
        """Index after the last frame."""
        return self.start + len(self.counts)

    def from_frame(self, index: int) -> TradeFrames | None:
        """The frames from batch index `index` on (None when none is left)."""
        k = index - self.start
        if k <= 0:
            return self
        if k >= len(self.counts):
            return None
        m = sum(self.counts[:k])
        codes, names = None, None
        if self.codes is not None and self.names is not None:  # numbered again by first appearance from `index`
            rest = self.codes[m:]
            if len(self.names) <= 8:  # a few symbols: where each first appears, a pass each, cheaper than a sort
                firsts = [(int((rest == c).argmax()), c) for c in np.flatnonzero(np.bincount(rest)).tolist()]
                seen = np.array([c for _, c in sorted(firsts)], dtype=np.intp)
            else:
                present, first = np.unique(rest, return_index=True)
                seen = present[np.argsort(first)]
            renumber = np.zeros(len(self.names), dtype=np.intp)
            renumber[seen] = np.arange(len(seen))
            codes, names = renumber[rest], [self.names[c] for c in seen.tolist()]
        return TradeFrames(
            index, self.counts[k:], self.symbol[m:], self.ts[m:], self.price[m:], self.size[m:], self.ids[m:],
            codes, names,
        )  # fmt: skip

    @staticmethod
    def joined(parts: list[TradeFrames]) -> TradeFrames:
        """Consecutive runs (each starting where the one before ends) as one (its symbols not numbered: a
        scanner's run is followed by the decoder's, which does not number them)."""
        if len(parts) == 1:
            return parts[0]

        def column(name: str) -> Any:
            cols = [getattr(p, name) for p in parts]
            if any(isinstance(c, np.ndarray) for c in cols):
                return np.concatenate([np.asarray(c) for c in cols])
            return [x for c in cols for x in c]

        return TradeFrames(
            parts[0].start, [c for p in parts for c in p.counts], [s for p in parts for s in p.symbol],
            column("ts"), column("price"), column("size"), [x for p in parts for x in p.ids],
        )  # fmt: skip

    def parsed(self, index: int) -> ParsedFrame:
        """Batch frame `index` (within these frames) as `parse_frame` gives it: the pipeline's per-frame path
        takes it from here instead of decoding the frame again."""
        k = index - self.start
        a = sum(self.counts[:k])
        b = a + self.counts[k]
        ts, px, sz = self.ts[a:b], self.price[a:b], self.size[a:b]
        if isinstance(ts, list):
            return ParsedFrame(t_symbol=self.symbol[a:b], t_ts=ts, t_price=px, t_size=sz, t_id=self.ids[a:b])  # type: ignore[arg-type]
        return ParsedFrame(
            t_symbol=self.symbol[a:b], t_ts=ts.tolist(), t_price=px.tolist(),  # type: ignore[union-attr]
            t_size=sz.tolist(), t_id=self.ids[a:b], t_ts_array=ts,  # type: ignore[union-attr]
        )  # fmt: skip


def truncate_raw(raw: bytes | str, limit: int = 2048) -> str:
    """The raw message as text, cut to `limit` characters for dead letters (never raises)."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes | bytearray | memoryview) else str(raw)
    return text if len(text) <= limit else text[:limit] + "...(truncated)"
