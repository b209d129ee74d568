"""Same tiny config, same data, same seed, on CPU: the transformer trains to identical metrics and predictions."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.config import FeaturesConfig
from gpt_trader.data.features import build_features
from gpt_trader.data.sources.bundled import BundledSource
from gpt_trader.ml.transformer.config import TransformerConfig

pytestmark = pytest.mark.slow

TINY = TransformerConfig(
    d_model=16,
    n_heads=2,
    n_layers=1,
    d_ff=32,
    max_seq_length=16,
    batch_size=32,
    max_epochs=2,
    window_stride=8,
    num_threads=1,
    accelerator="cpu",
    seed=7,
)


def _train_and_predict(frame: pl.DataFrame) -> tuple[dict[str, float], pl.DataFrame]:
    from gpt_trader.ml.transformer.trader import TransformerTrader

    trader = TransformerTrader(TINY, track=False)
    metrics = trader.train(frame)
    return metrics, trader.predict(frame.tail(64))["frame"]


def test_transformer_same_seed_same_data_identical_metrics_and_predictions():
    bars = BundledSource().fetch(
        "GOOGL", datetime(2015, 1, 1, tzinfo=UTC), datetime(2017, 1, 1, tzinfo=UTC), Timeframe.parse("1d")
    )
    frame = build_features(bars, FeaturesConfig())
    first_metrics, first = _train_and_predict(frame)
    second_metrics, second = _train_and_predict(frame)
    assert first_metrics == second_metrics
    assert first.equals(second)
    assert np.isfinite(first["expected_return"].to_numpy()).all()
