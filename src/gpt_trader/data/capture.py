"""Capture: fetch each configured dataset's new bars and append them to the raw store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from gpt_trader.core.clock import utc_midnight
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.config import DatasetSpec
from gpt_trader.data.sources.base import HistoricalSource
from gpt_trader.data.store import AppendResult, append_bars, dataset_path, last_timestamp


@dataclass(frozen=True, slots=True)
class CaptureResult:
    """Outcome of capturing one dataset."""

    key: str
    path: Path
    added: int
    skipped: int
    total: int
    first_fetch: datetime | None


def capture_dataset(spec: DatasetSpec, source: HistoricalSource, data_root: Path) -> CaptureResult:
    """Fetch only bars after the last stored one and append them; re-running adds nothing twice."""
    path = dataset_path(data_root, "raw", spec)
    timeframe = Timeframe.parse(spec.timeframe)
    last = last_timestamp(path)
    start = _as_utc(spec.start)
    if last is not None:
        start = last + timeframe.delta if start is None else max(start, last + timeframe.delta)
    end = _as_utc(spec.end)
    if start is not None and end is not None and start >= end:
        result = AppendResult(path, 0, 0, _count(path))
    else:
        result = append_bars(path, source.fetch(spec.symbol, start, end, timeframe))
    return CaptureResult(spec.key, path, result.added, result.skipped, result.total, start)


def capture_all(
    specs: list[DatasetSpec],
    source_for: Callable[[DatasetSpec], HistoricalSource],
    data_root: Path,
    on_done: Callable[[CaptureResult], None] | None = None,
) -> list[CaptureResult]:
    """Capture every dataset in order, reporting each as it finishes."""
    results = []
    for spec in specs:
        result = capture_dataset(spec, source_for(spec), data_root)
        if on_done is not None:
            on_done(result)
        results.append(result)
    return results


def _as_utc(day: date | None) -> datetime | None:
    return None if day is None else utc_midnight(day)


def _count(path: Path) -> int:
    from gpt_trader.data.store import read_bars

    return read_bars(path).height if path.exists() else 0
