"""Frozen value types for single market events, used on the live path (frames are used offline)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Bar:
    """One OHLCV bar; `ts` is the bar's open time (UTC)."""

    ts: datetime
    symbol: str
    source: str
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade print: `ts_event` from the exchange, `ts_init` when it was received (both UTC)."""

    ts_event: datetime
    ts_init: datetime
    symbol: str
    source: str
    price: float
    size: float
    trade_id: str


@dataclass(frozen=True, slots=True)
class Quote:
    """Top of book: best bid and ask with their sizes."""

    ts_event: datetime
    ts_init: datetime
    symbol: str
    source: str
    bid: float
    ask: float
    bid_size: float
    ask_size: float
