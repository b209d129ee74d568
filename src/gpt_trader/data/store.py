"""Parquet bar store: atomic, idempotent, incremental writes of `<stage>/<source>/<symbol>_<tf>.parquet`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from gpt_trader.core.errors import StoreError
from gpt_trader.core.fs import atomic_path
from gpt_trader.core.schemas import BAR_SCHEMA, check_bars
from gpt_trader.data.config import DatasetSpec


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did: rows added, rows already stored (skipped), and the file's total afterwards."""

    path: Path
    added: int
    skipped: int
    total: int


def dataset_path(root: Path, stage: str, spec: DatasetSpec) -> Path:
    """Path of a dataset's parquet file in a pipeline stage folder (`raw`, `validated`, `features`, ...)."""
    return root / stage / f"{spec.key}.parquet"


def read_bars(path: Path) -> pl.DataFrame:
    """Read and check a stored bar file; a corrupt or non-conforming file raises `StoreError` naming it."""
    try:
        df = pl.read_parquet(path)
    except FileNotFoundError:
        raise StoreError(f"{path}: no such bar file (run `gpt-trader data capture` first)") from None
    except Exception as exc:  # polars raises several exception types for damaged files
        raise StoreError(f"{path}: cannot read parquet ({type(exc).__name__}: {exc})") from None
    try:
        return check_bars(df, name=str(path))
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(str(exc)) from None


def last_timestamp(path: Path) -> datetime | None:
    """Timestamp of the newest stored bar, or None when the file does not exist yet."""
    if not path.exists():
        return None
    df = read_bars(path)
    return None if df.height == 0 else df["ts"].max()  # type: ignore[return-value]


def append_bars(path: Path, new: pl.DataFrame) -> AppendResult:
    """Append bars newer than the last stored one; older or equal timestamps are skipped, never rewritten.

    The new frame is checked first and the file replaced atomically, so a bad batch or a crash leaves the
    stored history exactly as it was.
    """
    incoming = check_bars(new, name=f"new bars for {path}")
    existing = read_bars(path) if path.exists() else pl.DataFrame(schema=BAR_SCHEMA)
    if existing.height and incoming.height:
        symbols = set(existing["symbol"].unique()) | set(incoming["symbol"].unique())
        if len(symbols) > 1:
            raise StoreError(f"{path}: refusing to mix symbols {sorted(symbols)} in one file")
    fresh = incoming.filter(pl.col("ts") > existing["ts"].max()) if existing.height else incoming
    skipped = incoming.height - fresh.height
    if fresh.height == 0:
        return AppendResult(path, 0, skipped, existing.height)
    combined = pl.concat([existing, fresh], how="vertical")
    write_frame(path, combined)
    return AppendResult(path, fresh.height, skipped, combined.height)


def write_frame(path: Path, df: pl.DataFrame) -> Path:
    """Write any frame to parquet atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        df.write_parquet(tmp, compression="zstd", statistics=True)
    return path
