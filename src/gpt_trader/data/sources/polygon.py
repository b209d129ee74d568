"""Polygon.io REST history: GET /v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{from}/{to}, then
each page's `next_url`.

`parse_aggregates` is pure and tested on recorded pages; `PolygonSource.fetch` is the edge. The key goes in
the documented `Authorization: Bearer` header rather than the `apiKey` query parameter, so it never sits in
a URL (httpx logs request URLs at INFO, and `next_url` would need it appended on every page).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

import polars as pl
from pydantic import SecretStr

from gpt_trader.core.clock import Clock, SystemClock
from gpt_trader.core.errors import SourceError
from gpt_trader.core.schemas import check_bars
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.config import ProviderConfig
from gpt_trader.data.sources.base import clip_range
from gpt_trader.data.sources.credentials import POLYGON_API_KEY_ENV, read_polygon_key
from gpt_trader.data.sources.frame import (
    build_bar_frame,
    drop_incomplete,
    empty_bars,
    stitch_pages,
    to_epoch_ms,
    to_utc,
)
from gpt_trader.data.sources.http import JsonHttpClient, redact_url

SOURCE = "polygon"
MAX_PAGE_LIMIT = 50_000
TIMESPANS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week"}
OK_STATUSES = frozenset({"OK", "DELAYED"})


def format_timespan(timeframe: Timeframe) -> tuple[int, str]:
    """Polygon's (multiplier, timespan) for `timeframe` (`15m` -> (15, "minute"))."""
    timespan = TIMESPANS.get(timeframe.unit)
    if timespan is None:
        raise SourceError(f"polygon does not serve {timeframe} aggregates; units: {sorted(TIMESPANS)}")
    return timeframe.count, timespan


def parse_aggregates(payload: Mapping[str, Any], symbol: str) -> pl.DataFrame:
    """One aggregates page (`{"status", "results": [{"t" ms, "o","h","l","c","v","vw","n"}], "next_url"}`)."""
    if not isinstance(payload, Mapping):
        raise SourceError(f"polygon: malformed aggregates for {symbol!r}: expected an object")
    status = payload.get("status")
    if status is not None and status not in OK_STATUSES:
        detail = payload.get("error") or payload.get("message") or "no detail"
        raise SourceError(
            f"polygon: aggregates for {symbol!r} returned status {status!r}: {detail} "
            f"(request_id {payload.get('request_id')})"
        )
    results = payload.get("results")
    if not results:  # Polygon omits `results` when the range holds no bars.
        return empty_bars()
    if not isinstance(results, list):
        raise SourceError(f"polygon: malformed aggregates for {symbol!r}: 'results' is not a list")
    try:
        open_ms = pl.Series([int(r["t"]) for r in results], dtype=pl.Int64)
        columns = [[float(r[key]) for r in results] for key in ("o", "h", "l", "c", "v")]
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceError(f"polygon: malformed aggregate for {symbol!r}: {type(exc).__name__}: {exc}") from None
    ts = open_ms.cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")
    return build_bar_frame(ts, symbol, SOURCE, columns)


class PolygonSource:
    """Historical aggregates from Polygon.io; key from POLYGON_API_KEY."""

    name = SOURCE

    def __init__(
        self,
        config: ProviderConfig,
        api_key: SecretStr,
        *,
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._api_key = api_key
        self._clock = clock or SystemClock()
        self._sleep = sleep

    @classmethod
    def from_env(cls, config: ProviderConfig, environ: Mapping[str, str] | None = None) -> PolygonSource:
        """Build from the provider config and POLYGON_API_KEY."""
        return cls(config, read_polygon_key(environ))

    def __repr__(self) -> str:
        return f"PolygonSource(url={self.config.polygon_url!r})"

    def fetch(self, symbol: str, start: datetime | None, end: datetime | None, timeframe: Timeframe) -> pl.DataFrame:
        """Return complete aggregates of `symbol` in `[start, end)`, following `next_url` to the last page."""
        start, end = (to_utc(start) if start else None), (to_utc(end) if end else None)
        multiplier, timespan = format_timespan(timeframe)
        from_ms = to_epoch_ms(start) if start else 0
        # `to` is inclusive on Polygon; the range here is half-open.
        to_ms = to_epoch_ms(end) - 1 if end else to_epoch_ms(self._clock.now())
        url: str = f"/v2/aggs/ticker/{quote(symbol, safe=':')}/range/{multiplier}/{timespan}/{from_ms}/{to_ms}"
        params: dict[str, str | int] | None = {"adjusted": "true", "sort": "asc", "limit": MAX_PAGE_LIMIT}
        origin = urlsplit(self.config.polygon_url)[:2]
        pages: list[pl.DataFrame] = []
        seen: set[str] = set()
        with self._client() as client:
            while True:
                payload = client.get_json(url, params)
                pages.append(parse_aggregates(payload, symbol))
                next_url = payload.get("next_url")
                if not next_url:
                    break
                if urlsplit(next_url)[:2] != origin:
                    # Never send the key to a host other than the configured one.
                    raise SourceError(
                        f"polygon: next_url {redact_url(next_url)!r} leaves {self.config.polygon_url!r}; "
                        "refused to send the key there"
                    )
                if next_url in seen:
                    raise SourceError(f"polygon: next_url repeated for {symbol!r}; paging stopped")
                seen.add(next_url)
                url, params = next_url, None  # next_url carries its own cursor and query.
        bars = clip_range(stitch_pages(pages), start, end)
        bars = drop_incomplete(bars, timeframe, self._clock.now())
        return check_bars(bars, name=f"polygon {symbol} {timeframe}")

    def _client(self) -> JsonHttpClient:
        return JsonHttpClient.from_config(
            SOURCE,
            self.config.polygon_url,
            self.config,
            headers={"Authorization": SecretStr(f"Bearer {self._api_key.get_secret_value()}")},
            auth_hint=f"check {POLYGON_API_KEY_ENV} and your plan",
            sleep=self._sleep,
        )
