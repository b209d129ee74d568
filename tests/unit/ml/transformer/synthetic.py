"""Small synthetic feature frames for the transformer tests (same columns as `build_features` output)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from gpt_trader.data.config import FeaturesConfig
from gpt_trader.data.features import CALENDAR_COLUMNS
from gpt_trader.ml.transformer.config import TransformerConfig
from gpt_trader.ml.transformer.panel import input_columns

FEATURES = FeaturesConfig()
COLUMNS = input_columns(FEATURES)


def tiny_config(**overrides: object) -> TransformerConfig:
    """A model that trains in a second or two on one CPU thread."""
    base: dict[str, object] = {
        "d_model": 16,
        "n_heads": 2,
        "n_layers": 1,
        "d_ff": 32,
        "max_seq_length": 8,
        "batch_size": 32,
        "max_epochs": 2,
        "dropout": 0.0,
        "window_stride": 4,
        "num_threads": 1,
    }
    base.update(overrides)
    return TransformerConfig.model_validate(base)


def synthetic_features(
    n: int = 300, *, symbols: tuple[str, ...] = ("AAA",), seed: int = 0, learnable: bool = True
) -> pl.DataFrame:
    """Feature rows whose label is the sign of the current `ret_1` when `learnable` (else random labels)."""
    rng = np.random.default_rng(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    frames = []
    for symbol in symbols:
        data: dict[str, object] = {c: rng.normal(size=n) for c in COLUMNS}
        signal = np.sign(data["ret_1"])  # type: ignore[arg-type]
        signal[signal == 0] = 1
        label = signal if learnable else rng.choice([-1, 1], size=n)
        ts = [start + timedelta(hours=i) for i in range(n)]
        data.update(
            ts=ts,
            symbol=[symbol] * n,
            source=["test"] * n,
            close=100 * np.exp(np.cumsum(0.01 * label)),
            minute_of_day=[t.hour * 60 for t in ts],
            day_of_week=[t.weekday() for t in ts],
            is_us_session=[int(14 <= t.hour < 21) for t in ts],
            is_europe_session=[int(8 <= t.hour < 16) for t in ts],
            is_asia_session=[int(0 <= t.hour < 6) for t in ts],
            fwd_return=0.01 * label,
            label=label.astype(np.int8),
        )
        frames.append(pl.DataFrame(data).with_columns(pl.col("ts").dt.cast_time_unit("us")))
    out = pl.concat(frames)
    return out.select("ts", "symbol", "source", "close", *COLUMNS, *CALENDAR_COLUMNS, "fwd_return", "label")
