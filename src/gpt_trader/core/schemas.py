"""Polars schemas for bars, trades and quotes, and the checks applied wherever data crosses a boundary."""

from __future__ import annotations

import polars as pl

from gpt_trader.core.errors import SchemaError

UTC_US = pl.Datetime("us", "UTC")

# `ts` of a bar is the bar's open time in UTC.
BAR_SCHEMA: dict[str, pl.DataType] = {
    "ts": UTC_US,
    "symbol": pl.String(),
    "source": pl.String(),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
}

# `ts_event` is the exchange's time, `ts_init` when we received it (both UTC): their gap is the feed latency.
TRADE_SCHEMA: dict[str, pl.DataType] = {
    "ts_event": UTC_US,
    "ts_init": UTC_US,
    "symbol": pl.String(),
    "source": pl.String(),
    "price": pl.Float64(),
    "size": pl.Float64(),
    "trade_id": pl.String(),
}

QUOTE_SCHEMA: dict[str, pl.DataType] = {
    "ts_event": UTC_US,
    "ts_init": UTC_US,
    "symbol": pl.String(),
    "source": pl.String(),
    "bid": pl.Float64(),
    "ask": pl.Float64(),
    "bid_size": pl.Float64(),
    "ask_size": pl.Float64(),
}

PRICE_COLUMNS = ("open", "high", "low", "close")


def conform(df: pl.DataFrame, schema: dict[str, pl.DataType], *, name: str) -> pl.DataFrame:
    """Select and cast `df` to `schema`, raising `SchemaError` naming missing/extra/uncastable columns.

    Numeric widening (ints to floats) and naive-or-other-zone timestamps to UTC are accepted; anything else
    is refused rather than guessed.
    """
    missing = [c for c in schema if c not in df.columns]
    extra = [c for c in df.columns if c not in schema]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if extra:
            parts.append(f"unexpected columns {extra}")
        raise SchemaError(f"{name}: {'; '.join(parts)} (expected {list(schema)})")
    exprs = []
    for col, dtype in schema.items():
        actual = df.schema[col]
        if actual == dtype:
            exprs.append(pl.col(col))
        elif isinstance(dtype, pl.Datetime):
            if not isinstance(actual, pl.Datetime):
                raise SchemaError(f"{name}: column {col!r} has type {actual}, expected a UTC datetime")
            expr = pl.col(col)
            expr = expr.dt.replace_time_zone("UTC") if actual.time_zone is None else expr.dt.convert_time_zone("UTC")
            exprs.append(expr.dt.cast_time_unit("us"))
        elif dtype.is_numeric() and actual.is_numeric():
            exprs.append(pl.col(col).cast(dtype))
        elif dtype == pl.String() and actual in (pl.Categorical(), pl.Enum):
            exprs.append(pl.col(col).cast(pl.String))
        else:
            raise SchemaError(f"{name}: column {col!r} has type {actual}, expected {dtype}")
    return df.select(exprs)


def check_bars(df: pl.DataFrame, *, name: str) -> pl.DataFrame:
    """Conform `df` to `BAR_SCHEMA` and enforce structural integrity.

    Refuses null or non-finite prices and volumes and timestamps that are not strictly increasing per symbol.
    Quality rules (OHLC consistency, gaps, outliers) belong to the validation gate, not here.
    """
    df = conform(df, BAR_SCHEMA, name=name)
    if df.height == 0:
        return df
    for col in ("ts", "symbol", "source"):
        nulls = df[col].null_count()
        if nulls:
            raise SchemaError(f"{name}: column {col!r} has {nulls} null value(s)")
    for col in (*PRICE_COLUMNS, "volume"):
        bad = df.filter(~pl.col(col).is_finite() | pl.col(col).is_null())
        if bad.height:
            first = bad.row(0, named=True)
            raise SchemaError(
                f"{name}: column {col!r} has {bad.height} null/NaN/inf value(s), first at ts={first['ts']}"
            )
    order = df.with_columns(prev=pl.col("ts").shift(1).over("symbol")).filter(pl.col("ts") <= pl.col("prev"))
    if order.height:
        row = order.row(0, named=True)
        kind = "duplicate" if row["ts"] == row["prev"] else "unsorted"
        raise SchemaError(
            f"{name}: {order.height} {kind} timestamp(s) for symbol {row['symbol']!r}, "
            f"first at ts={row['ts']} (previous {row['prev']})"
        )
    return df
