"""Config section for the real-time pipeline."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import Field

from gpt_trader.config_base import Section

ENDPOINT_ENV = "GPT_TRADER_REALTIME__ENDPOINTS__{}"


class StreamSourceConfig(Section):
    """One streaming source and the symbols it serves, in failover priority order."""

    type: Literal["alpaca", "binance", "polygon", "iex", "simulated", "replay"]
    symbols: list[str] = Field(min_length=1)


class StreamEndpoints(Section):
    """Websocket endpoints per provider; endpoints may come from GPT_TRADER_REALTIME__ENDPOINTS__<PROVIDER>."""

    alpaca: str = "wss://stream.data.alpaca.markets/v2/iex"
    binance: str = "wss://stream.binance.com:9443"
    polygon: str = "wss://socket.polygon.io/stocks"
    iex: str = "wss://ws-api.iextrading.com/1.0/tops"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> StreamEndpoints:
        """Defaults overridden by GPT_TRADER_REALTIME__ENDPOINTS__ALPACA etc. (the names Settings also reads)."""
        env = os.environ if environ is None else environ
        values = {
            name: env[ENDPOINT_ENV.format(name.upper())]
            for name in ("alpaca", "binance", "polygon", "iex")
            if env.get(ENDPOINT_ENV.format(name.upper()))
        }
        return cls(**values)


class ReplayConfig(Section):
    """The embedded local exchange behind the `replay` and `simulated` sources."""

    rate: float = Field(default=200.0, ge=0)  # trades per second; 0 = as fast as possible
    ticks_per_bar: int = Field(default=20, ge=4)
    batch: int = Field(default=100, gt=0)
    timestamps: Literal["original", "now"] = "original"
    quote_every: int = Field(default=5, ge=0)


class RealtimeConfig(Section):
    """Streaming sources, buffers and the bus."""

    sources: list[StreamSourceConfig] = Field(
        default_factory=lambda: [StreamSourceConfig(type="replay", symbols=["SPX"])]
    )
    # Ticks (trades and quotes) kept per symbol for `get_live_data`; memory is fixed by this.
    buffer_size: int = Field(default=100_000, gt=0)
    overflow_policy: Literal["overwrite", "drop_newest", "raise"] = "overwrite"
    bus: Literal["memory", "redis"] = "memory"
    # An endpoint, so it may come from GPT_TRADER_REALTIME__REDIS_URL.
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_ttl_secs: int = Field(default=3600, gt=0)
    bus_prefix: str = "gpt_trader:"
    bus_maxlen: int = Field(default=100_000, gt=0)
    endpoints: StreamEndpoints = Field(default_factory=StreamEndpoints)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    # Bars: event-time windows; trades up to `lateness_ms` late amend a closed bar before it is final.
    timeframes: list[str] = Field(default_factory=lambda: ["1s", "1m"])
    lateness_ms: int = Field(default=250, ge=0)
    # A symbol's windows close by the source's clock only after it has been quiet this long; while trades flow,
    # event time alone closes them (so a backlog in the socket is never refused as late).
    quiet_close_ms: float = Field(default=100.0, ge=0)
    bar_time: Literal["exchange", "corrected"] = "exchange"
    recent_bars: int = Field(default=1000, gt=0)
    # Robustness.
    stale_after_secs: float = Field(default=5.0, gt=0)
    reconnect_after_stale_secs: float = Field(default=15.0, gt=0)
    ping_interval_secs: float = Field(default=10.0, gt=0)
    open_timeout_secs: float = Field(default=10.0, gt=0)
    backoff_base_secs: float = Field(default=0.2, ge=0)
    backoff_max_secs: float = Field(default=10.0, ge=0)
    failback_after_secs: float = Field(default=1.0, ge=0)
    # How much longer a failback may wait for the recovered feed's standby trades to overlap what was counted.
    failback_max_wait_secs: float = Field(default=10.0, ge=0)
    backfill_timeout_secs: float = Field(default=30.0, gt=0)
    start_timeout_secs: float = Field(default=10.0, ge=0)
    # Input sanity: refuse (dead-letter) ticks outside these bounds.
    max_price: float = Field(default=1e9, gt=0)
    max_trade_size: float = Field(default=1e12, gt=0)
    # Exchange timestamps further ahead of the source's estimated clock are refused; None disables (replays).
    max_future_secs: float | None = 5.0
    dedup_window: int = Field(default=100_000, gt=0)
    offset_window: int = Field(default=512, gt=0)
    shadow_ticks: int = Field(default=20_000, gt=0)
    # Bus writer: ticks are written as one entry per symbol per flush (a micro-batch), bars one entry each.
    flush_interval_ms: float = Field(default=5.0, gt=0)
    max_pending_ticks: int = Field(default=200_000, gt=0)
    publish_ticks: bool = True
    tick_interval_ms: float = Field(default=20.0, gt=0)
