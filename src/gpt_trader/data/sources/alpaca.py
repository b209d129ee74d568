"""Alpaca Market Data REST history: stocks via /v2/stocks/{symbol}/bars, crypto pairs ("BTC/USD") via
/v1beta3/crypto/us/bars.

`parse_bars` / `parse_crypto_bars` are pure and tested on recorded pages; `AlpacaSource.fetch` is the edge
that pages through `next_page_token`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import polars as pl

from gpt_trader.core.clock import Clock, SystemClock
from gpt_trader.core.errors import SourceError
from gpt_trader.core.schemas import check_bars
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.config import ProviderConfig
from gpt_trader.data.sources.base import clip_range
from gpt_trader.data.sources.credentials import (
    ALPACA_KEY_ID_ENV,
    ALPACA_SECRET_KEY_ENV,
    AlpacaCredentials,
    read_alpaca_credentials,
)
from gpt_trader.data.sources.frame import (
    build_bar_frame,
    drop_incomplete,
    empty_bars,
    format_rfc3339,
    stitch_pages,
    to_utc,
)
from gpt_trader.data.sources.http import JsonHttpClient

SOURCE = "alpaca"
MAX_PAGE_LIMIT = 10_000
# Alpaca's documented spellings: [1-59]Min, [1-23]Hour, 1Day, 1Week ([1-12]Month is not a Timeframe unit).
_MAX_COUNT = {"m": 59, "h": 23, "d": 1, "w": 1}
_UNIT_NAMES = {"m": "Min", "h": "Hour", "d": "Day", "w": "Week"}


def format_timeframe(timeframe: Timeframe) -> str:
    """Alpaca's spelling of `timeframe` (`5m` -> `5Min`); unsupported ones raise `SourceError` naming them."""
    limit = _MAX_COUNT.get(timeframe.unit)
    if limit is None or timeframe.count > limit:
        raise SourceError(f"alpaca does not serve {timeframe} bars; supported: 1m..59m, 1h..23h, 1d, 1w")
    return f"{timeframe.count}{_UNIT_NAMES[timeframe.unit]}"


def is_crypto_symbol(symbol: str) -> bool:
    """Alpaca spells crypto pairs with a slash (`BTC/USD`); stocks never contain one."""
    return "/" in symbol


def _frame_from_bars(bars: Any, symbol: str, *, where: str) -> pl.DataFrame:
    if bars is None:  # Alpaca sends `"bars": null` for a range without data.
        return empty_bars()
    if not isinstance(bars, list):
        raise SourceError(f"alpaca: malformed {where} for {symbol!r}: 'bars' is {type(bars).__name__}, not a list")
    if not bars:
        return empty_bars()
    try:
        columns = [[float(bar[key]) for bar in bars] for key in ("o", "h", "l", "c", "v")]
        stamps = pl.Series([str(bar["t"]) for bar in bars], dtype=pl.String)
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceError(f"alpaca: malformed bar in {where} for {symbol!r}: {type(exc).__name__}: {exc}") from None
    try:
        ts = stamps.str.to_datetime(time_unit="us", time_zone="UTC")
    except pl.exceptions.PolarsError as exc:
        raise SourceError(f"alpaca: bad RFC 3339 timestamp in {where} for {symbol!r}: {exc}") from None
    return build_bar_frame(ts, symbol, SOURCE, columns)


def parse_bars(payload: Mapping[str, Any], symbol: str) -> pl.DataFrame:
    """One page of `/v2/stocks/{symbol}/bars` (`{"bars": [{"t","o","h","l","c","v","n","vw"}]}`) as bars."""
    if not isinstance(payload, Mapping) or "bars" not in payload:
        raise SourceError(f"alpaca: malformed stock bars page for {symbol!r}: no 'bars' key")
    return _frame_from_bars(payload["bars"], symbol, where="stock bars page")


def parse_crypto_bars(payload: Mapping[str, Any], symbol: str) -> pl.DataFrame:
    """One page of `/v1beta3/crypto/us/bars` (`{"bars": {"BTC/USD": [...]}, ...}`) as bars of `symbol`."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get("bars"), Mapping):
        raise SourceError(f"alpaca: malformed crypto bars page for {symbol!r}: 'bars' is not an object")
    return _frame_from_bars(payload["bars"].get(symbol), symbol, where="crypto bars page")


class AlpacaSource:
    """Historical bars from Alpaca's data API; keys from APCA_API_KEY_ID / APCA_API_SECRET_KEY."""

    name = SOURCE

    def __init__(
        self,
        config: ProviderConfig,
        credentials: AlpacaCredentials,
        *,
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._credentials = credentials
        self._clock = clock or SystemClock()
        self._sleep = sleep

    @classmethod
    def from_env(cls, config: ProviderConfig, environ: Mapping[str, str] | None = None) -> AlpacaSource:
        """Build from the provider config and the Alpaca keys in the environment."""
        return cls(config, read_alpaca_credentials(environ))

    def __repr__(self) -> str:
        return f"AlpacaSource(url={self.config.alpaca_url!r}, feed={self.config.alpaca_feed!r})"

    def fetch(self, symbol: str, start: datetime | None, end: datetime | None, timeframe: Timeframe) -> pl.DataFrame:
        """Return complete bars of `symbol` in `[start, end)`, following `next_page_token` to the end."""
        start, end = (to_utc(start) if start else None), (to_utc(end) if end else None)
        params: dict[str, str | int] = {
            "timeframe": format_timeframe(timeframe),
            "limit": min(self.config.page_limit, MAX_PAGE_LIMIT),
            "sort": "asc",
        }
        if start is not None:
            params["start"] = format_rfc3339(start)
        if end is not None:
            params["end"] = format_rfc3339(end)
        if is_crypto_symbol(symbol):
            url, parse = "/v1beta3/crypto/us/bars", parse_crypto_bars
            params["symbols"] = symbol
        else:
            url, parse = f"/v2/stocks/{quote(symbol, safe='')}/bars", parse_bars
            params.update(feed=self.config.alpaca_feed, adjustment="raw")
        pages: list[pl.DataFrame] = []
        seen: set[str] = set()
        with self._client() as client:
            token: str | None = None
            while True:
                payload = client.get_json(url, {**params, "page_token": token} if token else params)
                pages.append(parse(payload, symbol))
                token = payload.get("next_page_token") if isinstance(payload, Mapping) else None
                if not token:
                    break
                if token in seen:
                    raise SourceError(f"alpaca: next_page_token {token!r} repeated for {symbol!r}; paging stopped")
                seen.add(token)
        bars = clip_range(stitch_pages(pages), start, end)
        bars = drop_incomplete(bars, timeframe, self._clock.now())
        return check_bars(bars, name=f"alpaca {symbol} {timeframe}")

    def _client(self) -> JsonHttpClient:
        return JsonHttpClient.from_config(
            SOURCE,
            self.config.alpaca_url,
            self.config,
            headers={
                "APCA-API-KEY-ID": self._credentials.key_id,
                "APCA-API-SECRET-KEY": self._credentials.secret_key,
            },
            auth_hint=f"check {ALPACA_KEY_ID_ENV} / {ALPACA_SECRET_KEY_ENV} and your data subscription",
            sleep=self._sleep,
        )
