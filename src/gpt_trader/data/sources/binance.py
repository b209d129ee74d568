"""Binance spot REST history: GET /api/v3/klines, paged by moving `startTime` past the last open time.

`parse_klines` is pure and tested on recorded pages; `BinanceSource.fetch` is the edge. Klines are public
market data, so no key is needed; BINANCE_API_KEY, when set, is sent as X-MBX-APIKEY.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import polars as pl
from pydantic import SecretStr

from gpt_trader.core.clock import Clock, SystemClock
from gpt_trader.core.errors import SourceError
from gpt_trader.core.schemas import check_bars
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.config import ProviderConfig
from gpt_trader.data.sources.base import clip_range
from gpt_trader.data.sources.credentials import BINANCE_API_KEY_ENV, read_binance_key
from gpt_trader.data.sources.frame import (
    build_bar_frame,
    drop_incomplete,
    empty_bars,
    stitch_pages,
    to_epoch_ms,
    to_utc,
)
from gpt_trader.data.sources.http import JsonHttpClient

SOURCE = "binance"
MAX_PAGE_LIMIT = 1000
# The documented kline intervals that are fixed-length bars (`1M`, a calendar month, is not a Timeframe).
INTERVALS = frozenset({"1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w"})
KLINE_FIELDS = 12


def format_interval(timeframe: Timeframe) -> str:
    """Binance's interval for `timeframe` (same spelling); unsupported ones raise `SourceError`."""
    interval = str(timeframe)
    if interval not in INTERVALS:
        raise SourceError(f"binance does not serve {interval} klines; supported intervals: {sorted(INTERVALS)}")
    return interval


def format_symbol(symbol: str) -> str:
    """Binance's symbol spelling: `BTC/USDT` or `btc-usdt` -> `BTCUSDT`."""
    return symbol.replace("/", "").replace("-", "").upper()


def parse_klines(payload: Any, symbol: str) -> pl.DataFrame:
    """One /api/v3/klines response (arrays `[openTime, "open", "high", "low", "close", "volume", ...]`)."""
    if not isinstance(payload, list):
        raise SourceError(f"binance: malformed klines for {symbol!r}: expected a list, got {type(payload).__name__}")
    if not payload:
        return empty_bars()
    try:
        for i, row in enumerate(payload):
            if not isinstance(row, list) or len(row) < 6:
                raise ValueError(f"row {i} is not a kline array: {row!r:.80}")
        open_ms = pl.Series([int(row[0]) for row in payload], dtype=pl.Int64)
        columns = [[float(row[j]) for row in payload] for j in range(1, 6)]
    except (TypeError, ValueError) as exc:
        raise SourceError(f"binance: malformed klines for {symbol!r}: {exc}") from None
    ts = open_ms.cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")
    return build_bar_frame(ts, symbol, SOURCE, columns)


class BinanceSource:
    """Historical klines from Binance spot; public endpoint, optional key."""

    name = SOURCE

    def __init__(
        self,
        config: ProviderConfig,
        api_key: SecretStr | None = None,
        *,
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._api_key = api_key
        self._clock = clock or SystemClock()
        self._sleep = sleep

    @classmethod
    def from_env(cls, config: ProviderConfig, environ: Mapping[str, str] | None = None) -> BinanceSource:
        """Build from the provider config and the optional BINANCE_API_KEY."""
        return cls(config, read_binance_key(environ))

    def __repr__(self) -> str:
        return f"BinanceSource(url={self.config.binance_url!r}, keyed={self._api_key is not None})"

    def fetch(self, symbol: str, start: datetime | None, end: datetime | None, timeframe: Timeframe) -> pl.DataFrame:
        """Return complete klines of `symbol` opening in `[start, end)`, paging by `startTime`."""
        start, end = (to_utc(start) if start else None), (to_utc(end) if end else None)
        interval = format_interval(timeframe)
        limit = min(self.config.page_limit, MAX_PAGE_LIMIT)
        cursor = to_epoch_ms(start) if start else 0
        # Binance's endTime is inclusive; the range here is half-open.
        end_ms = to_epoch_ms(end) - 1 if end else None
        pages: list[pl.DataFrame] = []
        with self._client() as client:
            while end_ms is None or cursor <= end_ms:
                params: dict[str, str | int] = {
                    "symbol": format_symbol(symbol),
                    "interval": interval,
                    "startTime": cursor,
                    "limit": limit,
                }
                if end_ms is not None:
                    params["endTime"] = end_ms
                rows = client.get_json("/api/v3/klines", params)
                page = parse_klines(rows, symbol)
                pages.append(page)
                if len(rows) < limit:
                    break
                last_open = int(rows[-1][0])
                if last_open < cursor:
                    raise SourceError(
                        f"binance: klines for {symbol!r} went backwards (openTime {last_open} < {cursor})"
                    )
                cursor = last_open + 1
        bars = clip_range(stitch_pages(pages), start, end)
        bars = drop_incomplete(bars, timeframe, self._clock.now())
        return check_bars(bars, name=f"binance {symbol} {timeframe}")

    def _client(self) -> JsonHttpClient:
        headers = {"X-MBX-APIKEY": self._api_key} if self._api_key is not None else {}
        return JsonHttpClient.from_config(
            SOURCE,
            self.config.binance_url,
            self.config,
            headers=headers,
            auth_hint=f"check {BINANCE_API_KEY_ENV}, or unset it: klines need no key",
            sleep=self._sleep,
        )
