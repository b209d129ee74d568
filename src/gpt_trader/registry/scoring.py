"""Scoring registered models on one shared, recent window: positions after costs vs buy-and-hold.

Every registered model speaks the common interface: a features frame in, one row per (ts, symbol) with a
`position` target in [-1, 1] out. The position decided at close t is held over the return close_t -> close_{t+1}
and pays the cost model on every change of exposure (starting flat, so the first bar pays the entry). That is the
same accounting as `gpt_trader.ml.evaluation.buy_and_hold`, so a model that is always fully long scores exactly
buy-and-hold (its raw return minus the one entry cost).

The window: the most recent `window_bars` bars (on the timestamps the scored symbols share) that have a realized
next return. Both champion and challenger are scored on exactly these bars, each given the same
`lookback_bars` of history before them and no bar after the window end. A model is only scored on a window that
starts at or after its recorded held-out start (`training.heldout_start_ts`, or after `training.last_ts`): rows it
was fitted on would flatter it. For the challenger the window therefore lies in its validation/held-out tail
(the transformer's validation rows steer early stopping; the RL held-out rows are untouched). An older champion
was trained on older data and passes the check unless the data were revised or the split changed; then the gate
refuses to compare rather than score it in-sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from gpt_trader.core.errors import DataError
from gpt_trader.registry.promotion import Evidence, ServingInput, check_loaded_model
from gpt_trader.trading.costs import CostModel

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.types import Schema

HELDOUT_TAG = "training.heldout_start_ts"
LAST_TRAINED_TAG = "training.last_ts"


@dataclass(frozen=True, slots=True)
class ScoringWindow:
    """The decision bars both models are scored on (`start`..`end` inclusive, UTC) for `symbols`."""

    symbols: tuple[str, ...]
    start: datetime
    end: datetime
    n_bars: int

    @property
    def label(self) -> str:
        """A stable identifier; `decide_promotion` refuses evidence gathered on different windows."""
        return f"{'+'.join(self.symbols)} {self.start.isoformat()}..{self.end.isoformat()} ({self.n_bars} bars)"


def aligned_timestamps(frame: pl.DataFrame, symbols: tuple[str, ...]) -> pl.Series:
    """Sorted timestamps every one of `symbols` has a row at."""
    have = set(frame["symbol"].unique().to_list())
    missing = [s for s in symbols if s not in have]
    if missing:
        raise DataError(f"scoring data lacks symbols {missing} (have {sorted(have)})")
    common = None
    for symbol in symbols:
        ts = frame.filter(pl.col("symbol") == symbol).select("ts").unique()
        common = ts if common is None else common.join(ts, on="ts", how="inner")
    assert common is not None
    return common.sort("ts")["ts"]


def promotion_window(frame: pl.DataFrame, symbols: tuple[str, ...], window_bars: int) -> ScoringWindow:
    """The most recent `window_bars` shared bars that have a next bar (so their return is realized)."""
    ts = aligned_timestamps(frame, symbols)
    if ts.len() < window_bars + 1:
        raise DataError(f"{'+'.join(symbols)} has {ts.len()} shared bars; a {window_bars}-bar window needs one more")
    decisions = ts.slice(ts.len() - window_bars - 1, window_bars)
    return ScoringWindow(symbols, _utc(decisions[0]), _utc(decisions[-1]), window_bars)


def window_overlap(window: ScoringWindow, tags: dict[str, str], who: str) -> str | None:
    """Why `who` (a version's tags) must not be scored on `window`, or None when the window is after its training."""
    heldout = tags.get(HELDOUT_TAG)
    if heldout:
        start = _utc(heldout)
        if window.start < start:
            return (
                f"{who} was fitted on rows before {start.isoformat()}, but the window starts "
                f"{window.start.isoformat()}: scoring it there would be in-sample"
            )
        return None
    last = tags.get(LAST_TRAINED_TAG)
    if not last:
        return f"{who} has no recorded training range ({HELDOUT_TAG} / {LAST_TRAINED_TAG}); cannot check the window"
    if window.start <= _utc(last):
        return f"{who} was trained on rows up to {_utc(last).isoformat()}, overlapping the window from {window.start}"
    return None


def scoring_frame(frame: pl.DataFrame, window: ScoringWindow, lookback_bars: int) -> pl.DataFrame:
    """The window's symbols from `lookback_bars` shared bars before the window start to its end (nothing later)."""
    ts = aligned_timestamps(frame, window.symbols)
    first = int(np.searchsorted(ts.to_numpy(), np.datetime64(window.start.replace(tzinfo=None), "us")))
    begin = ts[max(0, first - lookback_bars)]
    start, end = _as_frame_ts(frame, begin), _as_frame_ts(frame, window.end)
    return frame.filter(
        pl.col("symbol").is_in(list(window.symbols)) & (pl.col("ts") >= start) & (pl.col("ts") <= end)
    ).sort("symbol", "ts")


def next_returns(frame: pl.DataFrame, window: ScoringWindow) -> dict[str, np.ndarray]:
    """Per symbol, close_{t+1} / close_t - 1 for every decision bar t of the window (on shared timestamps)."""
    ts = aligned_timestamps(frame, window.symbols)
    out = {}
    for symbol in window.symbols:
        close = ts.to_frame().join(frame.filter(pl.col("symbol") == symbol).select("ts", "close"), on="ts", how="left")
        close = close.with_columns(ret=pl.col("close").shift(-1) / pl.col("close") - 1.0)
        rows = close.filter(
            (pl.col("ts") >= _as_frame_ts(frame, window.start)) & (pl.col("ts") <= _as_frame_ts(frame, window.end))
        )
        out[symbol] = rows["ret"].to_numpy().astype(np.float64)
    return out


def model_input(frame: pl.DataFrame, schema: Any) -> pd.DataFrame:
    """The frame as a model's signature wants it: its columns only, naive-UTC `ts`, the logged dtypes."""
    from mlflow.types import DataType

    if isinstance(frame.schema["ts"], pl.Datetime) and frame.schema["ts"].time_zone:
        frame = frame.with_columns(pl.col("ts").dt.convert_time_zone("UTC").dt.replace_time_zone(None))
    if schema is None:
        return frame.to_pandas()
    casts = {
        DataType.double: pl.Float64,
        DataType.float: pl.Float32,
        DataType.long: pl.Int64,
        DataType.integer: pl.Int32,
        DataType.string: pl.Utf8,
        DataType.boolean: pl.Boolean,
    }
    columns = []
    for spec in schema.inputs:
        dtype = casts.get(spec.type)
        columns.append(pl.col(spec.name).cast(dtype) if dtype is not None else pl.col(spec.name))
    return frame.select(columns).to_pandas()


def feature_schema(frame: pl.DataFrame) -> Schema:
    """The input schema models are served from a features frame: its columns but the labels (the future), with
    MLflow types (naive-UTC `ts` is a datetime, integer flags stay integers)."""
    from mlflow.types import ColSpec, DataType, Schema

    from gpt_trader.data.features import LABEL_COLUMNS

    def mlflow_type(dtype: pl.DataType) -> DataType:
        if dtype in (pl.Int64, pl.UInt32, pl.UInt64):
            return DataType.long
        if dtype.is_integer():
            return DataType.integer
        if dtype == pl.Float32:
            return DataType.float
        if dtype.is_float():
            return DataType.double
        if dtype == pl.Boolean:
            return DataType.boolean
        if dtype.is_temporal():
            return DataType.datetime
        return DataType.string

    return Schema(
        [ColSpec(mlflow_type(dtype), name) for name, dtype in frame.schema.items() if name not in LABEL_COLUMNS]
    )


def serving_input(champion_uri: str | None, champion_version: str | None, frame: pl.DataFrame) -> ServingInput:
    """What a promoted model will be fed: the champion's input signature when there is a readable one (the live
    side serves that shape now), else the feature columns of `frame`."""
    if champion_uri is not None:
        from mlflow.models import get_model_info

        try:
            signature = get_model_info(champion_uri).signature
        except Exception:  # an unreadable champion is judged by the gate; fall back to the features
            signature = None
        if signature is not None and signature.inputs is not None:
            return ServingInput(signature.inputs, f"champion v{champion_version}'s input signature")
    return ServingInput(feature_schema(frame), "the feature columns")


def score_version(
    model_uri: str,
    frame: pl.DataFrame,
    window: ScoringWindow,
    cost_model: CostModel,
    *,
    version: str = "",
    lookback_bars: int = 300,
    serving: ServingInput | None = None,
) -> Evidence:
    """Sanity-check the model, then its Sharpe after costs, total return and drawdown on `window` vs buy-and-hold.

    Metric names match `PromotionConfig` defaults: `sharpe` and `buy_and_hold_sharpe`. A model that cannot
    predict the window, or predicts a non-finite position, gets no metrics and a note saying why. With `serving`,
    the sanity check includes whether the model's input signature accepts that input.
    """
    import mlflow.pyfunc

    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except Exception as exc:  # a model that does not load is evidence, not a crash of the gate
        from gpt_trader.registry.promotion import SanityCheck

        return Evidence(version, SanityCheck(loads=False, error=f"{type(exc).__name__}: {exc}"), {}, window.label)
    sanity = check_loaded_model(model, serving_input=serving)
    returns = next_returns(frame, window)
    baseline = window_performance({s: np.ones_like(r) for s, r in returns.items()}, returns, window, cost_model)
    metrics = {f"buy_and_hold_{k}": v for k, v in baseline.items()}
    try:
        inputs = model_input(scoring_frame(frame, window, lookback_bars), model.metadata.get_input_schema())
        positions = window_positions(model.predict(inputs), window)
    except Exception as exc:  # the gate records why a model could not be scored; it must not crash
        return Evidence(version, sanity, metrics, window.label, notes=(f"scoring failed: {type(exc).__name__}: {exc}",))
    metrics.update(window_performance(positions, returns, window, cost_model))
    return Evidence(version, sanity, metrics, window.label)


def window_positions(output: Any, window: ScoringWindow) -> dict[str, np.ndarray]:
    """Per symbol, the model's `position` at every decision bar of the window (clipped to [-1, 1])."""
    import pandas as pd

    if "position" not in output.columns:
        raise DataError(f"model output has no `position` column (got {list(output.columns)})")
    ts = pd.to_datetime(output["ts"])
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    index = pd.MultiIndex.from_arrays([ts, output["symbol"]])
    series = pd.Series(output["position"].to_numpy(dtype=float), index=index)
    out = {}
    start, end = pd.Timestamp(window.start.replace(tzinfo=None)), pd.Timestamp(window.end.replace(tzinfo=None))
    for symbol in window.symbols:
        mine = series.xs(symbol, level=1) if symbol in set(output["symbol"]) else pd.Series(dtype=float)
        mine = mine[(mine.index >= start) & (mine.index <= end)].sort_index()
        if len(mine) != window.n_bars:
            raise DataError(f"model gave {len(mine)} positions for {symbol} on a {window.n_bars}-bar window")
        values = mine.to_numpy(dtype=float)
        if not np.isfinite(values).all():
            raise DataError(f"model gave non-finite positions for {symbol}")
        out[symbol] = np.clip(values, -1.0, 1.0)
    return out


def window_performance(
    positions: dict[str, np.ndarray], returns: dict[str, np.ndarray], window: ScoringWindow, cost_model: CostModel
) -> dict[str, float]:
    """Equal-weight book over the symbols: Sharpe, total/annual return, max drawdown, turnover and costs paid."""
    from gpt_trader.ml.evaluation import performance, strategy_returns

    nets, costs, weights = [], [], []
    for symbol in window.symbols:
        net, cost = strategy_returns(positions[symbol], returns[symbol], cost_model)
        nets.append(net)
        costs.append(cost)
        weights.append(positions[symbol])
    k = len(window.symbols)
    ppy = _periods_per_year(window)
    perf = performance(np.sum(nets, axis=0) / k, ppy, positions=np.sum(weights, axis=0) / k, costs=np.sum(costs) / k)
    return {
        "sharpe": perf.sharpe,
        "total_return": perf.total_return,
        "annual_return": perf.annual_return,
        "max_drawdown": perf.max_drawdown,
        "turnover": perf.turnover,
        "costs_paid": perf.costs_paid,
        "n_bars": float(window.n_bars),
    }


def _periods_per_year(window: ScoringWindow) -> float:
    years = (window.end - window.start).total_seconds() / (365.25 * 86400)
    return (window.n_bars - 1) / years if years > 0 and window.n_bars > 1 else 252.0


def _utc(value: Any) -> datetime:
    import pandas as pd

    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    out: datetime = ts.to_pydatetime()
    return out


def _as_frame_ts(frame: pl.DataFrame, value: datetime) -> Any:
    """`value` comparable with the frame's `ts` column (aware UTC or naive UTC)."""
    dtype = frame.schema["ts"]
    aware = isinstance(dtype, pl.Datetime) and dtype.time_zone is not None
    return value if aware else value.replace(tzinfo=None)


def finite(value: float | None) -> bool:
    """A metric that can be compared."""
    return value is not None and math.isfinite(value)
