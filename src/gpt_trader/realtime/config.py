"""Config section for the real-time pipeline, and `stream_configs`: the configured sources as `StreamConfig`s."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from gpt_trader.config_base import Section
from gpt_trader.core.errors import ConfigError

if TYPE_CHECKING:
    from gpt_trader.data.config import ProviderConfig
    from gpt_trader.realtime.models import StreamConfig

ENDPOINT_ENV = "GPT_TRADER_REALTIME__ENDPOINTS__{}"
# The REST history endpoints a pipeline built without Settings reads (the names Settings reads for data.providers).
PROVIDER_ENV = "GPT_TRADER_DATA__PROVIDERS__{}"
_PROVIDER_ENV_KEYS = ("alpaca_url", "alpaca_feed", "binance_url", "polygon_url")
StreamTypeName = Literal["trades", "quotes", "bars"]


def _default_stream_types() -> list[StreamTypeName]:
    return ["trades", "quotes"]


class StreamSourceConfig(Section):
    """One streaming source and the symbols it serves; the list's order is the failover priority.

    `url` overrides the provider's endpoint (e.g. a running `gpt-trader exchange serve`); `name` labels the feed
    (metrics, logs) and must be unique; `priority` (lower wins) overrides the list order.
    """

    type: Literal["alpaca", "binance", "polygon", "iex", "simulated", "replay"]
    symbols: list[str] = Field(min_length=1)
    stream_types: list[StreamTypeName] = Field(default_factory=_default_stream_types, min_length=1)
    url: str | None = None
    priority: int | None = None
    name: str | None = None

    @field_validator("symbols")
    @classmethod
    def _symbols_distinct(cls, symbols: list[str]) -> list[str]:
        cleaned = [s.strip().upper() for s in symbols]
        if any(not s for s in cleaned):
            raise ValueError("symbols must be non-empty strings")
        twice = sorted({s for s in cleaned if cleaned.count(s) > 1})
        if twice:
            raise ValueError(f"symbols listed twice: {twice}")
        return cleaned

    @field_validator("url")
    @classmethod
    def _websocket_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("ws://", "wss://")):
            raise ValueError(f"must be a ws:// or wss:// URL, got {url!r}")
        return url

    @field_validator("stream_types")
    @classmethod
    def _types_served(cls, types: list[StreamTypeName], info: ValidationInfo) -> list[StreamTypeName]:
        # IEX TOPS carries last sale and top of book only: a bars subscription would never be answered.
        if info.data.get("type") == "iex" and "bars" in types:
            raise ValueError("iex serves no bars (trades and quotes only)")
        return types


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
    # Where missed bars come from when `RealtimePipeline(history=...)` is not given: "provider" = the history REST
    # API of the symbol's own streaming sources, by priority (Alpaca bars, Polygon aggregates, Binance klines; the
    # bundled bars for replay; none for IEX and simulated), endpoints from `data.providers`; "none" = no backfill
    # (gap windows stay flagged `gap`).
    backfill: Literal["provider", "none"] = "provider"
    start_timeout_secs: float = Field(default=10.0, ge=0)
    # Input sanity: refuse (dead-letter) ticks outside these bounds.
    max_price: float = Field(default=1e9, gt=0)
    max_trade_size: float = Field(default=1e12, gt=0)
    # Exchange timestamps further ahead of the source's estimated clock (ours before its first sample) are refused;
    # None disables (replays).
    max_future_secs: float | None = 5.0
    dedup_window: int = Field(default=100_000, gt=0)
    offset_window: int = Field(default=512, gt=0)
    # A clock sample that would put the source's clock this much further ahead counts only as the
    # `clock_confirm_frames`-th such frame in a row, agreeing within this margin at distinct times (a clock step
    # does; a bad print stamped ahead does not, and its trades go into their windows without moving the bars'
    # frontier); None: every sample counts.
    clock_outlier_ms: int | None = Field(default=250, ge=0)
    clock_confirm_frames: int = Field(default=3, ge=1)
    shadow_ticks: int = Field(default=20_000, gt=0)
    # Bus writer: ticks are written as one entry per symbol per flush (a micro-batch), bars one entry each.
    flush_interval_ms: float = Field(default=5.0, gt=0)
    max_pending_ticks: int = Field(default=200_000, gt=0)
    # How long `stop()` keeps retrying the final flush while the bus is down or hung; what is still queued then is
    # logged as an error and counted (`bus_health()`), never dropped silently.
    bus_drain_timeout_secs: float = Field(default=5.0, gt=0)
    publish_ticks: bool = True
    tick_interval_ms: float = Field(default=20.0, gt=0)

    @field_validator("timeframes")
    @classmethod
    def _timeframes_valid(cls, value: list[str]) -> list[str]:
        from gpt_trader.core.timeframe import Timeframe

        for text in value:
            if Timeframe.parse(text).unit == "w":
                # Windows are aligned to the Unix epoch, a Thursday: a week would run Thursday to Wednesday and
                # match no provider's weekly bar (their gaps could not be backfilled either).
                raise ValueError(f"{text!r}: weekly live bars are not supported (they would start on Thursdays); "
                                 "use '1d' and resample")  # fmt: skip
        return value

    @model_validator(mode="after")
    def _feed_names_unique(self) -> RealtimeConfig:
        names = [s.name for s in self.sources if s.name is not None]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"sources: feed names used twice: {twice}")
        return self


def stream_configs(
    sources: RealtimeConfig | Sequence[StreamSourceConfig | Mapping[str, Any]], *, where: str = "realtime.sources"
) -> list[StreamConfig]:
    """The configured sources as `StreamConfig`s in priority order (what `RealtimePipeline` takes).

    Accepts a `RealtimeConfig` or the raw `sources` list (e.g. parsed YAML); a bad entry raises `ConfigError`
    naming its key, e.g. `realtime.sources.1.symbols: replay has no bundled data for 'AAPL'`.
    """
    from gpt_trader.realtime.models import DataSource, StreamConfig, StreamType

    items = sources.sources if isinstance(sources, RealtimeConfig) else sources
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence):
        raise ConfigError(f"{where}: must be a list of sources, got {type(items).__name__}")
    if not items:
        raise ConfigError(f"{where}: at least one source is needed")
    parsed: list[tuple[int, StreamSourceConfig]] = []
    problems: list[str] = []
    for i, item in enumerate(items):
        try:
            s = item if isinstance(item, StreamSourceConfig) else StreamSourceConfig.model_validate(item)
        except ValidationError as exc:
            problems += [_describe_error(f"{where}.{i}", err) for err in exc.errors()]
        else:
            parsed.append((i, s))
    problems += _check_sources(parsed, where)
    if problems:
        raise ConfigError("invalid real-time sources:\n" + "\n".join(problems))
    return [
        StreamConfig(
            DataSource(s.type), list(s.symbols), [StreamType(t) for t in s.stream_types], s.url, s.priority, s.name
        )
        for _, s in parsed
    ]


def _describe_error(where: str, err: Any) -> str:
    key = ".".join([where, *(str(p) for p in err["loc"])])
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(sorted(StreamSourceConfig.model_fields))
        return f"  {key}: unknown key (allowed: {allowed})"
    if err["type"] == "value_error":  # our validators name the bad value themselves
        return f"  {key}: {err['msg'].removeprefix('Value error, ')}"
    value = err.get("input")
    shown = "" if err["type"] == "missing" or isinstance(value, dict) else f" (got {value!r})"
    return f"  {key}: {err['msg']}{shown}"


def _check_sources(sources: list[tuple[int, StreamSourceConfig]], where: str) -> list[str]:
    """What one entry alone cannot say: unique feed names, and replay symbols the bundled data holds."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, s in sources:
        if s.name is not None:
            if s.name in seen:
                problems.append(f"  {where}.{i}.name: {s.name!r} is already the name of {where}.{seen[s.name]}")
            seen.setdefault(s.name, i)
        if s.type == "replay":
            # Checked here, not at Settings load: the bundled catalog imports polars.
            from gpt_trader.data.sources.bundled import CATALOG
            from gpt_trader.realtime.replay import canonical_symbol

            missing = [sym for sym in s.symbols if canonical_symbol(sym) not in CATALOG]
            if missing:
                problems.append(
                    f"  {where}.{i}.symbols: replay has no bundled data for {missing}; "
                    f"bundled: {sorted(CATALOG)} (SPY = SPX, QQQ = IXIC)"
                )
    return problems


def providers_from_environ(environ: Mapping[str, str] | None = None) -> ProviderConfig:
    """`data.providers` defaults overridden by GPT_TRADER_DATA__PROVIDERS__ALPACA_URL etc. (the names Settings
    reads), for a pipeline built without Settings (the seed's bare `RealtimePipeline(configs)`)."""
    from gpt_trader.data.config import ProviderConfig

    env = os.environ if environ is None else environ
    values = {
        key: env[PROVIDER_ENV.format(key.upper())]
        for key in _PROVIDER_ENV_KEYS
        if env.get(PROVIDER_ENV.format(key.upper()))
    }
    try:
        return ProviderConfig(**values)
    except ValidationError as exc:
        raise ConfigError(f"{PROVIDER_ENV.format('*')}: {exc.errors()[0]['msg']} ({values})") from None
