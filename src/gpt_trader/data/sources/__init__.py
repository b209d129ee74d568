"""Historical market-data sources behind one interface; each provider module is imported only when used."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpt_trader.data.sources.base import HistoricalSource

if TYPE_CHECKING:
    from gpt_trader.data.config import DataConfig, SourceName

__all__ = ["HistoricalSource", "build_source"]


def build_source(name: SourceName, config: DataConfig) -> HistoricalSource:
    """Construct the named source from its config section (credentials come from the environment)."""
    if name == "bundled":
        from gpt_trader.data.sources.bundled import BundledSource

        return BundledSource()
    if name == "simulated":
        from gpt_trader.data.sources.simulated import SimulatedSource

        return SimulatedSource(config.simulated)
    if name == "alpaca":
        from gpt_trader.data.sources.alpaca import AlpacaSource

        return AlpacaSource.from_env(config.providers)
    if name == "binance":
        from gpt_trader.data.sources.binance import BinanceSource

        return BinanceSource.from_env(config.providers)
    if name == "polygon":
        from gpt_trader.data.sources.polygon import PolygonSource

        return PolygonSource.from_env(config.providers)
    raise ValueError(f"unknown source {name!r}")
