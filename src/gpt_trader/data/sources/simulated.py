"""Seeded multi-asset bar generator: market-wide volatility regimes, one-factor correlation, intraday volume.

The series is a pure function of `(config, symbol, timeframe)` and of the bar index alone:

- **Grid.** Bar `k` opens at `config.start` 00:00 UTC + `k * timeframe` on a continuous 24x7 calendar; bars exist
  for every `k >= 0`. `fetch(symbol, start, end)` returns the bars with `start <= ts < end`, where a missing `start`
  means `config.start` and a missing `end` means bar `config.n_bars` (so the default series has `n_bars` bars and a
  later `end` simply extends it).
- **Incremental consistency.** Random numbers are drawn in fixed blocks of `BLOCK_BARS` bars from Philox streams
  keyed by `(seed, stream, [symbol,] timeframe, block)`, and every array operation runs on whole, equally-shaped
  blocks, so bar `k` is bit-for-bit the same whatever window is asked for: `fetch(a, b)` then `fetch(b, c)` equals
  `fetch(a, c)`. The price level is a running sum, so earlier blocks' returns are regenerated (cheaply: no OHLC or
  volume) on every call rather than stored.
- **Regimes.** One market-wide continuous-time Markov chain over QUIET..EXTREME in wall-clock time, seeded by `seed`
  only and shared by every symbol and every timeframe. A regime survives `regime_persistence_secs` with probability
  `regime_persistence` (exponential holding times, mean `regime_persistence_secs / -ln(persistence)`, ~8.3 days by
  default; VOLATILE and EXTREME spells are shorter), so a regime lasts the same wall-clock time on 1s and 1d bars and
  the per-bar survival at timeframe `s` is `persistence ** (s / regime_persistence_secs)`. Moves go to a neighbour,
  leaning back towards NORMAL/ACTIVE. A bar takes the regime in force at its open time.
- **Returns.** Geometric Brownian motion per bar: `(drift - vol**2 / 2) * dt + vol * sqrt(dt) * eps` with the
  regime's annual vol, `dt = timeframe / 365.25 days`, and `eps = sqrt(rho) * market + sqrt(1 - rho) * own`, where the
  market shocks depend on `(seed, timeframe)` only and `own` on the symbol's blake2b hash, so any two symbols'
  returns correlate at `config.correlation`.
- **OHLC.** Open is the previous close; high and low are drawn from the exact distribution of a Brownian bridge's
  maximum and minimum between open and close, so they sit beyond the body by an amount that scales with the bar's
  volatility.
- **Volume.** `base_volume` per day, times the bar's share of a day, times `sqrt(regime vol / normal vol)`, times an
  intraday seasonality averaged over the bar, times mean-one lognormal noise. The seasonality (by UTC time of day,
  daylight saving ignored) is quiet overnight, higher in the European morning and U-shaped over the US cash session
  14:30-21:00 UTC: a spike at the open, a trough at midday and a smaller rise into the close.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from functools import cache

import numpy as np
import numpy.typing as npt
import polars as pl

from gpt_trader.core.clock import utc_midnight
from gpt_trader.core.errors import ConfigError, SourceError
from gpt_trader.core.schemas import BAR_SCHEMA, check_bars
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.config import SimulatedConfig

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
RegimeArray = npt.NDArray[np.int8]


class Regime(IntEnum):
    """Market-wide volatility regime, ordered from calmest to wildest; `label` is the `regime_vols` key."""

    QUIET = 0
    NORMAL = 1
    ACTIVE = 2
    VOLATILE = 3
    EXTREME = 4

    @property
    def label(self) -> str:
        """Lower-case name, as used in `SimulatedConfig.regime_vols`."""
        return self.name.lower()


# Changing any of these constants changes every generated series (they are part of the seed's meaning).
BLOCK_BARS = 1 << 16
_RUN_CHUNK = 1024
# A single fetch may return at most this many bars (~1.3 GB as a frame); ask for narrower windows beyond it.
MAX_WINDOW_BARS = 20_000_000
_YEAR_SECS = 365.25 * 86_400
_DAY_SECS = 86_400
# Chance that a regime change goes up (towards EXTREME); the ends reflect, the middle leans back to NORMAL/ACTIVE.
_UP_PROBABILITY = np.array([1.0, 0.55, 0.45, 0.4, 0.0])
# Mean holding time of each regime relative to the configured one: violent spells burn out sooner.
_DURATION_SCALE = np.array([1.0, 1.0, 1.0, 0.75, 0.5])
_VOLUME_NOISE_SIGMA = 0.35
# Intraday volume profile, by UTC hour: (overnight level, European-morning level, US session 14:30-21:00 UTC).
_EUROPE_OPEN_H, _US_OPEN_H, _US_CLOSE_H = 7.0, 14.5, 21.0
_OVERNIGHT_LEVEL, _EUROPE_LEVEL, _US_LEVEL = 0.5, 0.8, 1.0
_US_OPEN_SPIKE, _US_CLOSE_SPIKE, _SPIKE_DECAY_H = 1.6, 1.0, 0.5


class _Stream(IntEnum):
    REGIME = 0
    MARKET = 1
    IDIOSYNCRATIC = 2
    BAR_SHAPE = 3


@dataclass(frozen=True, slots=True)
class RegimeTimeline:
    """The market-wide regime path in wall-clock time: run `j` holds `regimes[j]` from `starts_secs[j]` on."""

    starts_secs: FloatArray
    regimes: RegimeArray

    def at(self, secs: FloatArray) -> RegimeArray:
        """Regime in force at each time (seconds since `config.start` 00:00 UTC)."""
        return self.regimes[np.searchsorted(self.starts_secs, secs, side="right") - 1]


def simulate_regime_timeline(config: SimulatedConfig, horizon_secs: float) -> RegimeTimeline:
    """Regime runs covering `[0, horizon_secs]` seconds after `config.start`; a longer horizon only appends runs."""
    mean_secs = config.regime_persistence_secs / -math.log(config.regime_persistence) * _DURATION_SCALE
    cdf = np.cumsum(_stationary_shares())
    starts: list[FloatArray] = []
    regimes: list[RegimeArray] = []
    clock, state, chunk = 0.0, -1, 0
    while clock <= horizon_secs:
        rng = _rng(config.seed, _Stream.REGIME, chunk)
        draws = rng.random(_RUN_CHUNK)
        holds = rng.standard_exponential(_RUN_CHUNK)
        states = np.empty(_RUN_CHUNK, dtype=np.int8)
        # A walk over runs, not bars: a few hundred iterations for years of data.
        for j, u in enumerate(draws.tolist()):
            if state < 0:
                state = min(int(np.searchsorted(cdf, u, side="right")), len(Regime) - 1)
            else:
                state = state + 1 if u < _UP_PROBABILITY[state] else state - 1
            states[j] = state
        ends = np.cumsum(np.concatenate(([clock], holds * mean_secs[states])))
        starts.append(ends[:-1])
        regimes.append(states)
        clock, chunk = float(ends[-1]), chunk + 1
    return RegimeTimeline(np.concatenate(starts), np.concatenate(regimes))


def simulate_regimes(config: SimulatedConfig, timeframe: Timeframe, n: int, start_index: int = 0) -> RegimeArray:
    """Regime (a `Regime` value, int8) of bars `start_index .. start_index + n - 1` at `timeframe`."""
    secs = (start_index + np.arange(n, dtype=np.int64)) * timeframe.seconds
    timeline = simulate_regime_timeline(config, float((start_index + n) * timeframe.seconds))
    return timeline.at(secs.astype(np.float64))


def simulate_bars(
    config: SimulatedConfig, symbol: str, timeframe: Timeframe, start_index: int, stop_index: int
) -> pl.DataFrame:
    """Bars `start_index <= k < stop_index` of `symbol` in `BAR_SCHEMA`; bar `k` never depends on the window."""
    if start_index < 0 or stop_index < start_index:
        raise ValueError(f"bad bar index range [{start_index}, {stop_index})")
    if stop_index - start_index > MAX_WINDOW_BARS:
        raise SourceError(
            f"simulated {symbol} {timeframe}: {stop_index - start_index} bars requested, more than "
            f"{MAX_WINDOW_BARS}; fetch a narrower [start, end)"
        )
    if stop_index == start_index:
        return pl.DataFrame(schema=BAR_SCHEMA)
    vols = regime_vols(config)
    bar_secs = timeframe.seconds
    dt = bar_secs / _YEAR_SECS
    bar_sigma = vols * math.sqrt(dt)
    bar_drift = (config.annual_drift - 0.5 * vols**2) * dt
    volume_scale = config.base_volume * bar_secs / _DAY_SECS * np.sqrt(vols / vols[Regime.NORMAL])
    market_weight, own_weight = math.sqrt(config.correlation), math.sqrt(1.0 - config.correlation)
    symbol_key = _symbol_key(symbol)
    first_block, stop_block = start_index // BLOCK_BARS, -(-stop_index // BLOCK_BARS)
    timeline = simulate_regime_timeline(config, float(stop_block * BLOCK_BARS * bar_secs))
    origin_us = int(utc_midnight(config.start).timestamp()) * 1_000_000

    log_price = math.log(config.base_price)
    parts: list[pl.DataFrame] = []
    for block in range(stop_block):
        index = block * BLOCK_BARS + np.arange(BLOCK_BARS, dtype=np.int64)
        open_secs = index * bar_secs
        regime = timeline.at(open_secs.astype(np.float64))
        market = _rng(config.seed, _Stream.MARKET, bar_secs, block).standard_normal(BLOCK_BARS)
        own = _rng(config.seed, _Stream.IDIOSYNCRATIC, symbol_key, bar_secs, block).standard_normal(BLOCK_BARS)
        log_return = bar_drift[regime] + bar_sigma[regime] * (market_weight * market + own_weight * own)
        # Element 0 is the block's opening log price, element i + 1 the close of bar i.
        log_path = np.cumsum(np.concatenate(([log_price], log_return)))
        if block >= first_block:
            lo = max(start_index - block * BLOCK_BARS, 0)
            hi = min(stop_index - block * BLOCK_BARS, BLOCK_BARS)
            shape_rng = _rng(config.seed, _Stream.BAR_SHAPE, symbol_key, bar_secs, block)
            ohlcv = _shape_bars(log_path, log_return, bar_sigma[regime], shape_rng)
            volume = volume_scale[regime] * _mean_seasonality(open_secs, bar_secs) * ohlcv.pop("noise")
            parts.append(
                pl.DataFrame(
                    {
                        "ts": origin_us + index[lo:hi] * (bar_secs * 1_000_000),
                        **{name: values[lo:hi] for name, values in ohlcv.items()},
                        "volume": volume[lo:hi],
                    }
                )
            )
        log_price = float(log_path[-1])

    frame = pl.concat(parts)
    return frame.select(
        pl.col("ts").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        pl.lit(symbol, pl.String).alias("symbol"),
        pl.lit("simulated", pl.String).alias("source"),
        "open",
        "high",
        "low",
        "close",
        "volume",
    )


def regime_vols(config: SimulatedConfig) -> FloatArray:
    """Annualized volatility per `Regime`, refusing a `regime_vols` that misses or misnames a regime."""
    labels = [r.label for r in Regime]
    missing = [label for label in labels if label not in config.regime_vols]
    unknown = sorted(set(config.regime_vols) - set(labels))
    if missing or unknown:
        raise ConfigError(f"simulated.regime_vols must name exactly {labels}: missing {missing}, unknown {unknown}")
    vols = np.array([config.regime_vols[label] for label in labels], dtype=np.float64)
    if not np.all(np.isfinite(vols) & (vols > 0)):
        raise ConfigError(f"simulated.regime_vols must be positive and finite, got {config.regime_vols}")
    return vols


class SimulatedSource:
    """Historical source over the seeded generator; see the module docstring for the grid and the model."""

    name = "simulated"

    def __init__(self, config: SimulatedConfig) -> None:
        regime_vols(config)
        self.config = config

    @property
    def origin(self) -> datetime:
        """Open time of bar 0: `config.start` at 00:00 UTC."""
        return utc_midnight(self.config.start)

    def index_range(self, start: datetime | None, end: datetime | None, timeframe: Timeframe) -> tuple[int, int]:
        """Bar indices `[first, stop)` whose open times fall in `[start, end)`; naive datetimes are read as UTC."""
        step_us = timeframe.seconds * 1_000_000
        first = 0 if start is None else max(-(-self._offset_us(start) // step_us), 0)
        stop = self.config.n_bars if end is None else max(-(-self._offset_us(end) // step_us), 0)
        return first, max(first, stop)

    def fetch(self, symbol: str, start: datetime | None, end: datetime | None, timeframe: Timeframe) -> pl.DataFrame:
        """Return the simulated bars of `symbol` with `start <= ts < end` (defaults: the configured `n_bars`)."""
        first, stop = self.index_range(start, end, timeframe)
        bars = simulate_bars(self.config, symbol, timeframe, first, stop)
        return check_bars(bars, name=f"simulated {symbol} {timeframe}")

    def fetch_regimes(self, start: datetime | None, end: datetime | None, timeframe: Timeframe) -> pl.DataFrame:
        """The regime of each bar in `[start, end)`, as columns `ts` and `regime` (its label): ground truth."""
        first, stop = self.index_range(start, end, timeframe)
        codes = simulate_regimes(self.config, timeframe, stop - first, first)
        step_us = timeframe.seconds * 1_000_000
        origin_us = int(self.origin.timestamp()) * 1_000_000
        labels = np.array([r.label for r in Regime])
        return pl.DataFrame(
            {
                "ts": origin_us + np.arange(first, stop, dtype=np.int64) * step_us,
                "regime": labels[codes.astype(np.int64)],
            }
        ).with_columns(pl.col("ts").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))

    def _offset_us(self, moment: datetime) -> int:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        delta = moment - self.origin
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _shape_bars(
    log_path: FloatArray, log_return: FloatArray, bar_sigma: FloatArray, rng: np.random.Generator
) -> dict[str, FloatArray]:
    """Open/high/low/close of one block plus its volume noise; high and low are Brownian-bridge extremes."""
    up_draw = rng.standard_exponential(log_return.size)
    down_draw = rng.standard_exponential(log_return.size)
    noise = np.exp(_VOLUME_NOISE_SIGMA * rng.standard_normal(log_return.size) - 0.5 * _VOLUME_NOISE_SIGMA**2)
    # Max of a bridge from 0 to x with variance v: (x + sqrt(x^2 + 2 v E)) / 2 with E ~ Exp(1); min likewise.
    spread = 2.0 * bar_sigma**2
    excursion_up = 0.5 * (log_return + np.sqrt(log_return**2 + spread * up_draw))
    excursion_down = 0.5 * (log_return - np.sqrt(log_return**2 + spread * down_draw))
    prices = np.exp(log_path)
    open_, close = prices[:-1], prices[1:]
    # The max/min guard only absorbs rounding: the bridge extremes are already beyond the body.
    high = np.maximum(np.maximum(open_ * np.exp(excursion_up), open_), close)
    low = np.minimum(np.minimum(open_ * np.exp(excursion_down), open_), close)
    return {"open": open_, "high": high, "low": low, "close": close, "noise": noise}


@cache
def _seasonality_integral() -> FloatArray:
    """Running integral of the mean-one intraday volume profile, per second of the UTC day (86,401 points)."""
    hour = (np.arange(_DAY_SECS) + 0.5) / 3600.0
    in_us = (hour >= _US_OPEN_H) & (hour < _US_CLOSE_H)
    us_session = (
        _US_LEVEL
        + _US_OPEN_SPIKE * np.exp(-(hour - _US_OPEN_H) / _SPIKE_DECAY_H)
        + _US_CLOSE_SPIKE * np.exp(-(_US_CLOSE_H - hour) / _SPIKE_DECAY_H)
    )
    in_europe = (hour >= _EUROPE_OPEN_H) & (hour < _US_OPEN_H)
    profile = np.where(in_us, us_session, np.where(in_europe, _EUROPE_LEVEL, _OVERNIGHT_LEVEL))
    profile /= profile.mean()
    integral: FloatArray = np.concatenate(([0.0], np.cumsum(profile)))
    return integral


def _mean_seasonality(open_secs: IntArray, bar_secs: int) -> FloatArray:
    """Average of the intraday profile over each bar `[open, open + bar_secs)` (exactly 1 for whole days)."""
    integral = _seasonality_integral()
    whole_days, remainder = divmod(bar_secs, _DAY_SECS)
    begin = open_secs % _DAY_SECS
    finish = begin + remainder
    wraps = finish > _DAY_SECS
    partial = integral[np.where(wraps, finish - _DAY_SECS, finish)] - integral[begin] + wraps * integral[-1]
    mean: FloatArray = (whole_days * integral[-1] + partial) / bar_secs
    return mean


def _stationary_shares() -> FloatArray:
    """Long-run share of time spent in each regime (detailed balance of the neighbour walk, times holding time)."""
    runs = [1.0]
    for i in range(len(Regime) - 1):
        runs.append(runs[-1] * _UP_PROBABILITY[i] / (1.0 - _UP_PROBABILITY[i + 1]))
    shares = np.array(runs) * _DURATION_SCALE
    normalized: FloatArray = shares / shares.sum()
    return normalized


def _symbol_key(symbol: str) -> int:
    """Stable 64-bit key of a symbol (Python's `hash()` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(symbol.encode(), digest_size=8).digest(), "big")


def _rng(seed: int, *key: int) -> np.random.Generator:
    """Counter-based generator for one stream and block: any block can be drawn without the ones before it."""
    sequence = np.random.SeedSequence(seed % 2**64, spawn_key=tuple(int(k) for k in key))
    return np.random.Generator(np.random.Philox(sequence))
