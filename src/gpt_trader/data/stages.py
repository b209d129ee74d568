"""The offline data stages (capture -> validate -> features) as library calls.

The CLI, the DVC stages and the Prefect flows all call these, so no logic lives only in a shell.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt_trader.core.errors import ValidationFailedError
from gpt_trader.core.fs import atomic_write_text
from gpt_trader.data.capture import CaptureResult, capture_all
from gpt_trader.data.config import DatasetSpec
from gpt_trader.settings import Settings


@dataclass(frozen=True, slots=True)
class DatasetSummary:
    """One dataset's state across the stages, for the run summary."""

    key: str
    rows: int
    first: str | None
    last: str | None
    verdict: str
    features_rows: int | None


def capture_stage(settings: Settings, on_done: Callable[[CaptureResult], None] | None = None) -> list[CaptureResult]:
    """Capture every configured dataset into `<data>/raw` and write the capture metrics."""
    from gpt_trader.data.sources import build_source

    sources: dict[str, Any] = {}

    def source_for(spec: DatasetSpec) -> Any:
        if spec.source not in sources:
            sources[spec.source] = build_source(spec.source, settings.data)
        return sources[spec.source]

    results = capture_all(list(settings.data.datasets), source_for, Path(settings.paths.data), on_done)
    _write_metrics(
        settings,
        "capture.json",
        {r.key: {"added": r.added, "skipped": r.skipped, "rows": r.total} for r in results},
    )
    return results


def validate_stage(settings: Settings, on_done: Callable[[Any], None] | None = None) -> list[Any]:
    """Run the validation gate on every dataset; raise `ValidationFailedError` after all ran if any failed."""
    from gpt_trader.data.validation import run_gate, write_validation_metrics

    reports = []
    for spec in settings.data.datasets:
        report = run_gate(spec, Path(settings.paths.data), Path(settings.paths.reports), settings.validation)
        if on_done is not None:
            on_done(report)
        reports.append(report)
    write_validation_metrics(reports, Path(settings.paths.metrics) / "validation.json")
    failed = [r for r in reports if not r.success]
    if failed:
        details = "; ".join(f"{r.key}: {', '.join(sorted({f.expectation for f in r.failures}))}" for r in failed)
        raise ValidationFailedError(
            f"{len(failed)} of {len(reports)} dataset(s) failed validation and were quarantined under "
            f"{Path(settings.paths.data) / 'quarantine'}: {details}"
        )
    return reports


def features_stage(settings: Settings, on_done: Callable[[DatasetSpec, Path], None] | None = None) -> list[Path]:
    """Build features for every validated dataset; refuses (raises) on any dataset that is not validated."""
    from gpt_trader.data.features import run_features
    from gpt_trader.data.validation import require_validated

    data_root = Path(settings.paths.data)
    # Check every dataset before building any, so a refusal leaves no partial stage output behind.
    for spec in settings.data.datasets:
        require_validated(spec, data_root)
    paths = []
    for spec in settings.data.datasets:
        path = run_features(spec, data_root, settings.features)
        if on_done is not None:
            on_done(spec, path)
        paths.append(path)
    _write_metrics(settings, "features.json", _features_metrics(settings, paths))
    return paths


def features_inputs_outputs(settings: Settings) -> tuple[list[Path], list[Path]]:
    """The validated files the features stage reads and the feature files it writes."""
    from gpt_trader.data.store import dataset_path

    root = Path(settings.paths.data)
    specs = settings.data.datasets
    return [dataset_path(root, "validated", s) for s in specs], [dataset_path(root, "features", s) for s in specs]


def summarize(settings: Settings) -> list[DatasetSummary]:
    """Read back what the stages produced: rows, date range, validation verdict and feature rows."""
    import polars as pl

    from gpt_trader.data.store import dataset_path

    data_root = Path(settings.paths.data)
    out = []
    for spec in settings.data.datasets:
        raw = dataset_path(data_root, "raw", spec)
        rows, first, last = 0, None, None
        if raw.exists():
            ts = pl.read_parquet(raw, columns=["ts"])["ts"]
            rows = ts.len()
            if rows:
                first, last = str(ts.min())[:16], str(ts.max())[:16]
        if dataset_path(data_root, "quarantine", spec).exists():
            verdict = "quarantined"
        elif dataset_path(data_root, "validated", spec).exists():
            verdict = "passed"
        else:
            verdict = "not validated"
        feats = dataset_path(data_root, "features", spec)
        frows = pl.scan_parquet(feats).select(pl.len()).collect().item() if feats.exists() else None
        out.append(DatasetSummary(spec.key, rows, first, last, verdict, frows))
    return out


def _features_metrics(settings: Settings, paths: list[Path]) -> dict[str, Any]:
    import polars as pl

    metrics: dict[str, Any] = {}
    for spec, path in zip(settings.data.datasets, paths, strict=True):
        labels = pl.read_parquet(path, columns=["label"])["label"].drop_nulls()
        n = max(labels.len(), 1)
        metrics[spec.key] = {
            "rows": labels.len(),
            "buy_share": round(float((labels == 1).sum()) / n, 4),
            "hold_share": round(float((labels == 0).sum()) / n, 4),
            "sell_share": round(float((labels == -1).sum()) / n, 4),
        }
    return metrics


def _write_metrics(settings: Settings, name: str, payload: dict[str, Any]) -> Path:
    import json

    return atomic_write_text(Path(settings.paths.metrics) / name, json.dumps(payload, indent=2, sort_keys=True) + "\n")
