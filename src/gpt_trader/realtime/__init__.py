"""Real-time market data: websocket sources, normalization, buffers, bus and live bars.

The seed's API (`RealtimePipeline`, `StreamConfig`, `DataSource`, `StreamType`) is exported lazily so importing this
package stays cheap (no pandas, polars, redis or websockets until used).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpt_trader.realtime.bars import BarAggregator, LiveBar
    from gpt_trader.realtime.bus import Bus, InProcessBus, RedisStreamsBus
    from gpt_trader.realtime.config import RealtimeConfig
    from gpt_trader.realtime.exchange import ExchangeConfig, ExchangeThread, LocalExchange
    from gpt_trader.realtime.models import DataSource, StreamConfig, StreamType
    from gpt_trader.realtime.pipeline import RealtimePipeline

_EXPORTS = {
    "DataSource": "gpt_trader.realtime.models",
    "StreamType": "gpt_trader.realtime.models",
    "StreamConfig": "gpt_trader.realtime.models",
    "RealtimePipeline": "gpt_trader.realtime.pipeline",
    "RealtimeConfig": "gpt_trader.realtime.config",
    "LiveBar": "gpt_trader.realtime.bars",
    "BarAggregator": "gpt_trader.realtime.bars",
    "Bus": "gpt_trader.realtime.bus",
    "InProcessBus": "gpt_trader.realtime.bus",
    "RedisStreamsBus": "gpt_trader.realtime.bus",
    "LocalExchange": "gpt_trader.realtime.exchange",
    "ExchangeConfig": "gpt_trader.realtime.exchange",
    "ExchangeThread": "gpt_trader.realtime.exchange",
}
__all__ = [
    "BarAggregator",
    "Bus",
    "DataSource",
    "ExchangeConfig",
    "ExchangeThread",
    "InProcessBus",
    "LiveBar",
    "LocalExchange",
    "RealtimeConfig",
    "RealtimePipeline",
    "RedisStreamsBus",
    "StreamConfig",
    "StreamType",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gpt_trader.realtime' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
