"""Data drift between the training reference features and a recent live window (Evidently 0.7 API).

`split_windows` cuts a feature frame by time into a reference window (the training window: the oldest
`reference_fraction` of the rows, or an explicit date range) and a current window (the latest `current_bars`
rows); `detect_drift` runs Evidently's `DataDriftPreset` on them and returns a `DriftResult`; `write_drift_report`
saves the HTML report and a JSON summary atomically under `<reports>/drift/<source>/<symbol>_<tf>/`.
`check_drift` chains the three for a features file, which is what the scheduled `drift_flow` calls.

Per column, Evidently picks the test when no method is configured: on reference windows of at most 1,000 rows the
two-sample Kolmogorov-Smirnov test (drift when p < 0.05), above that the Wasserstein distance normalised by the
reference std (drift when >= 0.1). The dataset drifts when the share of drifted columns reaches
`drift_share_threshold` (Evidently's own `DriftedColumnsCount` test: share < threshold passes).

Calendar features (`minute_of_day`, `day_of_week`, session flags) are excluded by default: they are functions of
the timestamp, so their distribution in a window is set by the calendar (which weekdays and hours it spans), not by
the market, and on daily bars all but `day_of_week` are constant. With `include_calendar` they are compared as
categorical columns (chi-square / Jensen-Shannon), never as numerical ones.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl
from pydantic import Field, model_validator

from gpt_trader.config_base import Section
from gpt_trader.core.errors import DataError
from gpt_trader.core.fs import atomic_write_text
from gpt_trader.core.markdown import markdown_table

if TYPE_CHECKING:
    import pandas as pd

    from gpt_trader.data.config import FeaturesConfig

# Evidently 0.7 stat-test names (`evidently.legacy.calculations.stattests`); spelled out here so a typo in
# params.yaml fails at start-up instead of inside the first scheduled run.
DriftMethod = Literal[
    "ks",
    "wasserstein",
    "psi",
    "jensenshannon",
    "kl_div",
    "anderson",
    "cramer_von_mises",
    "mannw",
    "ed",
    "es",
    "t_test",
    "empirical_mmd",
    "hellinger",
    "TVD",
    "chisquare",
    "z",
    "fisher_exact",
    "g_test",
]
LATEST = "latest"
_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_STAMP_RE = re.compile(r"^\d{8}T\d{6}Z$")


class DriftConfig(Section):
    """Drift check settings: windows, Evidently methods/thresholds and the dataset-level drift share.

    Composed into the settings as `monitoring.drift`.
    """

    # The dataset drifts when (drifted columns / compared columns) >= this share.
    drift_share_threshold: float = Field(default=0.5, gt=0, le=1)
    # None keeps Evidently's per-column choice (K-S p-value 0.05 up to 1,000 reference rows, else normed
    # Wasserstein 0.1). A threshold is a p-value for *_p_value tests (drift below it), else a distance (drift above).
    method: DriftMethod | None = None
    threshold: float | None = Field(default=None, gt=0)
    per_column_method: dict[str, DriftMethod] = Field(default_factory=dict)
    per_column_threshold: dict[str, float] = Field(default_factory=dict)
    # Reference window = the training window: the oldest `reference_fraction` of the rows (evaluation's
    # train_frac), unless `reference_start`/`reference_end` (UTC dates, end exclusive) name it explicitly.
    reference_fraction: float = Field(default=0.7, gt=0, le=1)
    reference_start: date | None = None
    reference_end: date | None = None
    # Current window = the latest bars; the reference is clipped to end before it, so the two never overlap.
    current_bars: int = Field(default=250, gt=0)
    # Fewer rows than this in either window is an error: a two-sample test on a handful of rows decides nothing.
    min_rows: int = Field(default=30, ge=2)
    include_calendar: bool = False
    # Timestamped reports kept per dataset (each Evidently HTML is ~5 MB); `latest.*` is always kept.
    keep_reports: int = Field(default=30, ge=1)

    @model_validator(mode="after")
    def _reference_range_ordered(self) -> DriftConfig:
        if self.reference_start and self.reference_end and self.reference_start >= self.reference_end:
            raise ValueError(f"reference_start {self.reference_start} is not before reference_end {self.reference_end}")
        return self


@dataclass(frozen=True, slots=True)
class WindowSpan:
    """Rows and time span (ISO-8601 UTC, None without a timestamp column) of one compared window."""

    rows: int
    start: str | None = None
    end: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {"rows": self.rows, "start": self.start, "end": self.end}


@dataclass(frozen=True, slots=True)
class ColumnDrift:
    """One column's drift test: Evidently's method, its threshold, the score and the verdict."""

    column: str
    method: str
    threshold: float
    score: float
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "column": self.column,
            "method": self.method,
            "threshold": self.threshold,
            # A degenerate column (e.g. constant in both windows) can score NaN; JSON has no NaN.
            "score": self.score if math.isfinite(self.score) else None,
            "drifted": self.drifted,
        }


@dataclass(frozen=True)
class DriftResult:
    """Outcome of one drift check; `snapshot` is the Evidently snapshot the HTML report is rendered from."""

    columns: tuple[ColumnDrift, ...]
    share_drifted: float
    drift_share_threshold: float
    drift_detected: bool
    reference: WindowSpan
    current: WindowSpan
    snapshot: Any = field(default=None, repr=False, compare=False)

    @property
    def drifted_columns(self) -> list[str]:
        """Names of the columns whose test reported drift, in compared order."""
        return [c.column for c in self.columns if c.drifted]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (no snapshot)."""
        return {
            "drift_detected": self.drift_detected,
            "share_drifted": self.share_drifted,
            "drift_share_threshold": self.drift_share_threshold,
            "n_columns": len(self.columns),
            "drifted_columns": self.drifted_columns,
            "reference": self.reference.to_dict(),
            "current": self.current.to_dict(),
            "columns": [c.to_dict() for c in self.columns],
        }


@dataclass(frozen=True, slots=True)
class DriftWindows:
    """The reference (training) and current (recent) windows cut from one feature frame."""

    reference: pl.DataFrame
    current: pl.DataFrame


@dataclass(frozen=True, slots=True)
class DriftReportPaths:
    """Files one report wrote: the timestamped HTML/JSON and the stable `latest.*` copies the dashboard links."""

    html: Path
    json: Path
    latest_html: Path
    latest_json: Path


@dataclass(frozen=True)
class DriftCheck:
    """A drift check of one dataset: the result and where its report was written."""

    dataset: str
    result: DriftResult
    paths: DriftReportPaths

    def summary(self) -> dict[str, Any]:
        """Small JSON-safe dict for flow return values and event payloads."""
        return {
            "dataset": self.dataset,
            "drift_detected": self.result.drift_detected,
            "share_drifted": self.result.share_drifted,
            "drift_share_threshold": self.result.drift_share_threshold,
            "drifted_columns": self.result.drifted_columns,
            "n_columns": len(self.result.columns),
            "report": str(self.paths.html),
            "latest_report": str(self.paths.latest_html),
            "reference": self.result.reference.to_dict(),
            "current": self.result.current.to_dict(),
        }


def drift_columns(features: FeaturesConfig, config: DriftConfig) -> tuple[list[str], list[str]]:
    """(numerical, categorical) feature columns to compare: the model inputs, calendar ones only if configured."""
    from gpt_trader.data.features import CALENDAR_COLUMNS, feature_columns

    names = feature_columns(features)
    numerical = [c for c in names if c not in CALENDAR_COLUMNS]
    categorical = [c for c in names if c in CALENDAR_COLUMNS] if config.include_calendar else []
    return numerical, categorical


def split_windows(features: pl.DataFrame, config: DriftConfig, *, ts_column: str = "ts") -> DriftWindows:
    """Cut a feature frame (one symbol) by time into the reference (training) window and the latest bars.

    The frame is sorted by `ts_column` first; the reference always ends before the current window starts, so a
    bar is never compared with itself.
    """
    if ts_column not in features.columns:
        raise DataError(f"feature frame has no timestamp column {ts_column!r} (columns: {features.columns})")
    df = features.sort(ts_column)
    current = df.tail(config.current_bars)
    if current.height < config.min_rows:
        raise DataError(f"current window has {current.height} rows, fewer than min_rows={config.min_rows}")
    older = df.head(df.height - current.height)
    if config.reference_start is not None or config.reference_end is not None:
        ts = pl.col(ts_column)
        if config.reference_start is not None:
            older = older.filter(ts >= _utc_midnight(config.reference_start))
        if config.reference_end is not None:
            older = older.filter(ts < _utc_midnight(config.reference_end))
        what = f"reference window [{config.reference_start}, {config.reference_end})"
    else:
        # The fraction is of the whole frame (as the training split is), clipped to the rows before `current`.
        older = older.head(min(older.height, int(df.height * config.reference_fraction)))
        what = f"reference window (first {config.reference_fraction:.0%} of {df.height} rows, before the current)"
    if older.height < config.min_rows:
        raise DataError(f"{what} has {older.height} rows, fewer than min_rows={config.min_rows}")
    return DriftWindows(reference=older, current=current)


def detect_drift(
    reference: pl.DataFrame | pd.DataFrame,
    current: pl.DataFrame | pd.DataFrame,
    columns: Sequence[str],
    config: DriftConfig,
    *,
    categorical_columns: Sequence[str] = (),
    ts_column: str | None = "ts",
) -> DriftResult:
    """Compare `current` against `reference` column by column with Evidently's `DataDriftPreset`.

    Raises `DataError` naming the column and window on missing columns, non-numeric numerical columns, nulls,
    NaN or infinite values, and on windows with fewer than `config.min_rows` rows. `ts_column`, when present,
    only records the windows' time spans.
    """
    compared = [*columns, *categorical_columns]
    if not compared:
        raise DataError("no columns to compare for drift")
    if len(set(compared)) != len(compared):
        raise DataError(f"columns listed more than once: {sorted({c for c in compared if compared.count(c) > 1})}")
    ref = _checked_frame(reference, "reference", columns, categorical_columns, config.min_rows)
    cur = _checked_frame(current, "current", columns, categorical_columns, config.min_rows)

    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=list(columns), categorical_columns=list(categorical_columns))
    preset = DataDriftPreset(
        columns=compared,
        drift_share=config.drift_share_threshold,
        method=config.method,
        threshold=config.threshold,
        per_column_method=dict(config.per_column_method) or None,
        per_column_threshold=dict(config.per_column_threshold) or None,
    )
    # Evidently's argument order is (current, reference); include_tests gives each column's verdict as computed by
    # the stat test itself, so we never re-derive "p below / distance above" per method.
    snapshot = Report([preset], include_tests=True).run(
        Dataset.from_pandas(cur.select(compared).to_pandas(), data_definition=definition),
        Dataset.from_pandas(ref.select(compared).to_pandas(), data_definition=definition),
    )
    column_results = _column_results(snapshot.dict(), compared)
    share = sum(c.drifted for c in column_results) / len(column_results)
    return DriftResult(
        columns=column_results,
        share_drifted=share,
        drift_share_threshold=config.drift_share_threshold,
        drift_detected=share >= config.drift_share_threshold,
        reference=_span(ref, ts_column),
        current=_span(cur, ts_column),
        snapshot=snapshot,
    )


def drift_report_dir(reports_dir: str | Path, dataset: str) -> Path:
    """`<reports>/drift/<dataset key>/`: the key's `/` becomes folders, as under `data/features/`."""
    parts = [p for p in dataset.split("/") if p]
    if not parts or any(p in {".", ".."} for p in parts):
        raise ValueError(f"dataset key {dataset!r} is not a relative `<source>/<name>` key")
    return Path(reports_dir, "drift", *parts)


def write_drift_report(
    result: DriftResult,
    reports_dir: str | Path,
    dataset: str,
    *,
    now: datetime | None = None,
    keep: int = 30,
) -> DriftReportPaths:
    """Write `<stamp>.html`, `<stamp>.json` and `latest.html`/`latest.json` atomically; prune to `keep` stamps.

    The JSON summary is `result.to_dict()` plus the dataset, creation time and the HTML path.
    """
    if result.snapshot is None:
        raise ValueError("result has no Evidently snapshot to render (was it built by detect_drift?)")
    created = (now or datetime.now(UTC)).astimezone(UTC)
    stamp = created.strftime(_STAMP_FORMAT)
    folder = drift_report_dir(reports_dir, dataset)
    html = result.snapshot.get_html_str(as_iframe=False)
    paths = DriftReportPaths(
        html=folder / f"{stamp}.html",
        json=folder / f"{stamp}.json",
        latest_html=folder / f"{LATEST}.html",
        latest_json=folder / f"{LATEST}.json",
    )
    summary = {"dataset": dataset, "created": created.isoformat(), "report": str(paths.html), **result.to_dict()}
    text = json.dumps(summary, indent=2, default=_json_default, allow_nan=False) + "\n"
    # Timestamped files first, `latest` last: a reader of latest.* never sees a report whose archive is missing.
    atomic_write_text(paths.html, html)
    atomic_write_text(paths.json, text)
    atomic_write_text(paths.latest_html, html)
    atomic_write_text(paths.latest_json, text)
    _prune(folder, keep)
    return paths


def check_drift(
    features_path: str | Path,
    dataset: str,
    columns: Sequence[str],
    config: DriftConfig,
    reports_dir: str | Path,
    *,
    categorical_columns: Sequence[str] = (),
    now: datetime | None = None,
) -> DriftCheck:
    """Read a features parquet file, split it into windows, detect drift and write the report."""
    path = Path(features_path)
    if not path.exists():
        raise DataError(f"{path}: no features file for {dataset!r} (run the features stage first)")
    windows = split_windows(pl.read_parquet(path), config)
    result = detect_drift(windows.reference, windows.current, columns, config, categorical_columns=categorical_columns)
    paths = write_drift_report(result, reports_dir, dataset, now=now, keep=config.keep_reports)
    return DriftCheck(dataset=dataset, result=result, paths=paths)


def drift_markdown(check: DriftCheck) -> str:
    """Markdown summary for a Prefect artifact: verdict, windows, and one row per column (drifted first)."""
    r = check.result
    verdict = "**drift detected**" if r.drift_detected else "no drift"
    head = (
        f"### Data drift: {check.dataset}: {verdict}\n\n"
        f"{len(r.drifted_columns)} of {len(r.columns)} columns drifted "
        f"(share {r.share_drifted:.3f}, threshold {r.drift_share_threshold:.3f}).\n\n"
        f"Reference {r.reference.start} .. {r.reference.end} ({r.reference.rows} rows); "
        f"current {r.current.start} .. {r.current.end} ({r.current.rows} rows).\n\n"
        f"Report: `{check.paths.html}`\n\n"
    )
    rows = [c.to_dict() for c in sorted(r.columns, key=lambda c: not c.drifted)]
    return head + markdown_table(rows, ["column", "drifted", "score", "method", "threshold"])


# --- helpers ---


def _utc_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _checked_frame(
    frame: pl.DataFrame | pd.DataFrame,
    window: str,
    numerical: Sequence[str],
    categorical: Sequence[str],
    min_rows: int,
) -> pl.DataFrame:
    """The frame as polars, after checking rows, presence, dtypes and finiteness; errors name column and window."""
    df = frame if isinstance(frame, pl.DataFrame) else pl.from_pandas(frame)
    missing = [c for c in [*numerical, *categorical] if c not in df.columns]
    if missing:
        raise DataError(f"{window} window lacks column(s) {missing} (has {df.columns})")
    if df.height < min_rows:
        raise DataError(f"{window} window has {df.height} rows, fewer than min_rows={min_rows}")
    for name in numerical:
        dtype = df.schema[name]
        if not dtype.is_numeric():
            raise DataError(f"{window} window column {name!r} is {dtype}, not numeric")
        col = df[name]
        nulls = col.null_count()
        bad = int(col.is_nan().sum()) + int(col.is_infinite().sum()) if dtype.is_float() else 0
        if nulls or bad:
            raise DataError(f"{window} window column {name!r} has {nulls} null and {bad} NaN/inf value(s)")
    for name in categorical:
        nulls = df[name].null_count()
        if nulls:
            raise DataError(f"{window} window column {name!r} has {nulls} null value(s)")
    return df


def _column_results(report: dict[str, Any], compared: Sequence[str]) -> tuple[ColumnDrift, ...]:
    """Per-column score/method/threshold from the ValueDrift metrics, verdict from their tests, in `compared` order."""
    metrics = {m["id"]: m for m in report["metrics"]}
    by_column: dict[str, ColumnDrift] = {}
    for test in report.get("tests", []):
        params = test.get("metric_config", {}).get("params", {})
        if not str(params.get("type", "")).endswith(":ValueDrift"):
            continue
        metric = metrics[test["metric_config"]["metric_id"]]
        # Statuses are enums (TestStatus.FAIL); FAIL means the column's stat test reported drift.
        status = getattr(test["status"], "value", test["status"])
        column = str(params["column"])
        by_column[column] = ColumnDrift(
            column=column,
            method=str(metric["config"]["method"]),
            threshold=float(metric["config"]["threshold"]),
            score=float(metric["value"]),
            drifted=status == "FAIL",
        )
    missing = [c for c in compared if c not in by_column]
    if missing:
        raise RuntimeError(f"Evidently report has no drift test for column(s) {missing}")
    return tuple(by_column[c] for c in compared)


def _span(df: pl.DataFrame, ts_column: str | None) -> WindowSpan:
    if ts_column is None or ts_column not in df.columns or df.height == 0:
        return WindowSpan(rows=df.height)
    ts = df[ts_column]
    return WindowSpan(rows=df.height, start=_iso(ts.min()), end=_iso(ts.max()))


def _iso(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _json_default(value: Any) -> Any:
    # Evidently hands back numpy scalars; anything else unexpected is stringified rather than failing the write.
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _prune(folder: Path, keep: int) -> None:
    """Delete the oldest timestamped reports beyond `keep` (names sort by time); `latest.*` is never touched."""
    stamps = sorted({p.stem for p in folder.iterdir() if _STAMP_RE.match(p.stem)})
    for stamp in stamps[: max(0, len(stamps) - keep)]:
        for suffix in (".html", ".json"):
            (folder / f"{stamp}{suffix}").unlink(missing_ok=True)


__all__ = [
    "ColumnDrift",
    "DriftCheck",
    "DriftConfig",
    "DriftMethod",
    "DriftReportPaths",
    "DriftResult",
    "DriftWindows",
    "WindowSpan",
    "check_drift",
    "detect_drift",
    "drift_columns",
    "drift_markdown",
    "drift_report_dir",
    "split_windows",
    "write_drift_report",
]
