"""Real S&P 500 daily bars for the scaling tests, loaded once per session."""

from __future__ import annotations

import polars as pl
import pytest

from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.sources.bundled import BundledSource
from gpt_trader.scaling.conditions import MarketConditionDetector
from gpt_trader.scaling.config import ConditionConfig


@pytest.fixture(scope="session")
def spx() -> pl.DataFrame:
    """S&P 500 daily bars 1999-2018 (bundled, real)."""
    return BundledSource().fetch("SPX", None, None, Timeframe.parse("1d"))


@pytest.fixture(scope="session")
def spx_conditions(spx: pl.DataFrame) -> pl.DataFrame:
    """The default classifier run over the whole S&P 500 history: columns ts, condition (int), score."""
    detector = MarketConditionDetector(ConditionConfig())
    conditions, scores = [], []
    for ts, price, volume in zip(spx["ts"], spx["close"], spx["volume"], strict=True):
        condition, features = detector.update(price, volume, ts.timestamp())
        conditions.append(int(condition))
        scores.append(features.score)
    return spx.select("ts").with_columns(condition=pl.Series(conditions), score=pl.Series(scores))
