"""Config sections for market-data capture, validation and features."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gpt_trader.config_base import Section
from gpt_trader.core.timeframe import Timeframe

SourceName = Literal["bundled", "simulated", "alpaca", "binance", "polygon"]


def symbol_slug(symbol: str) -> str:
    """File-name-safe spelling of a symbol (`BTC/USD` -> `BTC-USD`)."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in symbol)


class DatasetSpec(Section):
    """One series to capture: where from, which symbol, which bar length, and its trading calendar."""

    source: SourceName
    symbol: str = Field(min_length=1)
    timeframe: str = "1d"
    start: date | None = None
    end: date | None = None
    # `weekdays`: no bars expected on Saturdays/Sundays (equities, FX); `continuous`: 24x7 (crypto, simulated).
    calendar: Literal["weekdays", "continuous"] = "weekdays"
    # Missing bars tolerated between two consecutive bars (holidays, closures); None uses validation's default.
    max_missing_bars: int | None = Field(default=None, ge=0)

    @field_validator("timeframe")
    @classmethod
    def _timeframe_parses(cls, value: str) -> str:
        return str(Timeframe.parse(value))

    @model_validator(mode="after")
    def _range_ordered(self) -> DatasetSpec:
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self

    @property
    def key(self) -> str:
        """Stable identifier, also the file stem: `<source>/<symbol>_<timeframe>`."""
        return f"{self.source}/{symbol_slug(self.symbol)}_{self.timeframe}"


class SimulatedConfig(Section):
    """Parameters of the seeded multi-asset generator."""

    seed: int = 7
    start: date = date(2024, 1, 1)
    n_bars: int = Field(default=5000, gt=0)
    base_price: float = Field(default=100.0, gt=0)
    annual_drift: float = 0.05
    # Asset returns share one market factor with this (non-negative: one factor cannot make all pairs negative)
    # pairwise correlation.
    correlation: float = Field(default=0.6, ge=0, le=0.99)
    # Annualized volatility of each regime; the chain moves between neighbouring regimes.
    regime_vols: dict[str, float] = Field(
        default_factory=lambda: {"quiet": 0.08, "normal": 0.16, "active": 0.28, "volatile": 0.5, "extreme": 0.9}
    )
    regime_persistence: float = Field(default=0.995, gt=0, lt=1)
    # `regime_persistence` is the chance a regime survives this much wall-clock time, whatever the bar length
    # (default: 0.995 per hour, a mean regime of ~8.3 days).
    regime_persistence_secs: float = Field(default=3600.0, gt=0)
    # Mean volume of one whole day in the normal regime; shorter bars get their share of it.
    base_volume: float = Field(default=1_000_000.0, gt=0)


class ProviderConfig(Section):
    """REST endpoints of the history providers; keys come only from the environment."""

    alpaca_url: str = "https://data.alpaca.markets"
    alpaca_feed: Literal["iex", "sip"] = "iex"
    binance_url: str = "https://api.binance.com"
    polygon_url: str = "https://api.polygon.io"
    timeout_secs: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=5, ge=0)
    page_limit: int = Field(default=1000, gt=0)
    # Exponential backoff with jitter between retries of transient failures (connect, timeout, 5xx).
    backoff_base_secs: float = Field(default=0.5, ge=0)
    backoff_max_secs: float = Field(default=30.0, ge=0)
    # A 429/418 asking to wait longer than this fails at once instead (Binance bans last up to 3 days).
    max_retry_after_secs: float = Field(default=120.0, ge=0)


class ValidationConfig(Section):
    """Thresholds of the OHLCV validation gate."""

    max_missing_bars: int = Field(default=4, ge=0)
    # A bar's log return is an outlier when it exceeds this many trailing standard deviations.
    outlier_z: float = Field(default=12.0, gt=0)
    outlier_window: int = Field(default=63, ge=5)
    # Share of bars that must not be outliers (Great Expectations `mostly`).
    outlier_mostly: float = Field(default=0.999, gt=0, le=1)
    max_price: float = Field(default=1e7, gt=0)


class FeaturesConfig(Section):
    """Feature and label definitions; every window looks only backwards."""

    return_horizons: list[int] = Field(default_factory=lambda: [1, 5, 20])
    volatility_windows: list[int] = Field(default_factory=lambda: [20, 60])
    rsi_window: int = Field(default=14, ge=2)
    macd_fast: int = Field(default=12, ge=2)
    macd_slow: int = Field(default=26, ge=3)
    macd_signal: int = Field(default=9, ge=2)
    bollinger_window: int = Field(default=20, ge=2)
    bollinger_k: float = Field(default=2.0, gt=0)
    volume_z_window: int = Field(default=20, ge=2)
    label_horizon: int = Field(default=1, ge=1)
    # Neutral (Hold) band: |forward return| below this many trailing sigmas of the horizon return.
    label_neutral_sigma: float = Field(default=0.1, ge=0)
    label_sigma_window: int = Field(default=60, ge=5)

    @model_validator(mode="after")
    def _macd_ordered(self) -> FeaturesConfig:
        if self.macd_fast >= self.macd_slow:
            raise ValueError(f"macd_fast ({self.macd_fast}) must be below macd_slow ({self.macd_slow})")
        if any(h <= 0 for h in self.return_horizons) or any(w < 2 for w in self.volatility_windows):
            raise ValueError("return_horizons must be positive and volatility_windows at least 2")
        return self


def _default_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(source="bundled", symbol="SPX", timeframe="1d"),
        DatasetSpec(source="bundled", symbol="IXIC", timeframe="1d"),
        DatasetSpec(source="bundled", symbol="GOOGL", timeframe="1d"),
        # FX closes for Christmas: 2017-12-25 07:00-22:00 UTC is 14 missing hourly bars.
        DatasetSpec(source="bundled", symbol="EURUSD", timeframe="1h", max_missing_bars=24),
    ]


class DataConfig(Section):
    """Which datasets the pipeline captures, and how the generator and providers behave."""

    datasets: list[DatasetSpec] = Field(default_factory=_default_datasets)
    simulated: SimulatedConfig = SimulatedConfig()
    providers: ProviderConfig = ProviderConfig()

    @model_validator(mode="after")
    def _unique_datasets(self) -> DataConfig:
        keys = [d.key for d in self.datasets]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"datasets listed twice: {dupes}")
        return self
