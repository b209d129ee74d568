"""Each streaming source's own historical REST client: where the bars a feed missed are backfilled from.

A gap on an Alpaca feed is filled from Alpaca's `/v2/stocks/{symbol}/bars`, on Polygon from its aggregates, on
Binance from `/api/v3/klines`, with the keys the websocket adapters read from the same environment variables.
Replay of the bundled real bars (with their original timestamps) is its own history. IEX has none: IEX Cloud's
REST API was retired in 2024 and its TOPS feed has no bars. Simulated has none either: the embedded exchange draws
its simulated tape at one timeframe, so no history reproduces the windows of another; its gaps stay flagged rather
than being filled with invented bars.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from gpt_trader.realtime.models import DataSource

if TYPE_CHECKING:
    from gpt_trader.data.config import ProviderConfig
    from gpt_trader.data.sources.base import HistoricalSource


def provider_history(
    source: DataSource,
    providers: ProviderConfig,
    environ: Mapping[str, str] | None = None,
    *,
    replay_timestamps: Literal["original", "now"] = "original",
) -> HistoricalSource | None:
    """The historical client that backfills `source`'s gaps, or None where it has none (IEX, simulated, and
    replay restamped with `now`). Missing provider keys raise `SourceError` naming the variable."""
    if source == DataSource.ALPACA:
        from gpt_trader.data.sources.alpaca import AlpacaSource

        return AlpacaSource.from_env(providers, environ)
    if source == DataSource.POLYGON:
        from gpt_trader.data.sources.polygon import PolygonSource

        return PolygonSource.from_env(providers, environ)
    if source == DataSource.BINANCE:
        from gpt_trader.data.sources.binance import BinanceSource

        return BinanceSource.from_env(providers, environ)
    if source == DataSource.REPLAY and replay_timestamps == "original":
        from gpt_trader.data.sources.bundled import BundledSource

        return BundledSource()
    return None
