"""The OHLCV validation gate (Great Expectations): validated data moves on, failing data is quarantined.

The suite checks, per dataset: no nulls; prices in (0, `max_price`]; `high >= max(open, close)` and
`low <= min(open, close)`; volume >= 0; timestamps unique and strictly increasing; gaps between consecutive
bars within the calendar's tolerance; and return outliers (|log return| over the trailing, one-bar-shifted
rolling std) beyond `outlier_z` on no more than `1 - outlier_mostly` of the bars.

GX has no polars support, so the derived columns the rules need (`max_oc`, `min_oc`, `missing_bars`,
`return_z`) are computed with polars first and the frame is handed to GX as pandas.

Raw data is never deleted or modified: `data/raw` is the DVC output of the capture stage, so "moving" a
failing dataset to quarantine is realised as a copy (`quarantine/<key>.parquet` plus
`<key>.failures.json`), and any stale validated copy is removed so downstream stages refuse the key.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import polars as pl

from gpt_trader.core.errors import ValidationFailedError
from gpt_trader.core.fs import atomic_write_text
from gpt_trader.core.schemas import BAR_SCHEMA, PRICE_COLUMNS, conform
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.config import DatasetSpec, ValidationConfig
from gpt_trader.data.store import dataset_path, read_bars, write_frame

# Derived columns the suite checks; they exist only in the frame handed to GX, never in stored data.
DERIVED_COLUMNS = ("max_oc", "min_oc", "missing_bars", "return_z")
_EXAMPLES = 5
# A Monday, so whole business weeks line up with calendar weeks.
_BUSINESS_EPOCH = date(1970, 1, 5)


@dataclass(frozen=True)
class ExpectationFailure:
    """One failed expectation: its GX type, the column(s) it checked, its arguments and offending examples."""

    expectation: str
    column: str | None
    kwargs: dict[str, Any]
    unexpected_count: int | None
    unexpected_examples: list[Any] = field(default_factory=list)

    def describe(self) -> str:
        """One line: expectation, column, count and a few offending values (with their `ts`)."""
        where = f"(column={self.column})" if self.column else ""
        count = f": {self.unexpected_count} unexpected" if self.unexpected_count is not None else ""
        examples = f", e.g. {self.unexpected_examples[:3]}" if self.unexpected_examples else ""
        return f"{self.expectation}{where}{count}{examples}"


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of validating one dataset; `output` is where the gate put the data (validated or quarantine)."""

    key: str
    success: bool
    rows: int
    evaluated: int
    unsuccessful: int
    success_percent: float
    failures: list[ExpectationFailure]
    flagged_outliers: int
    output: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the report."""
        data = asdict(self)
        data["output"] = None if self.output is None else str(self.output)
        return _json_safe(data)

    def describe(self) -> str:
        """Human summary naming the dataset, each failing expectation, its column and counts."""
        head = (
            f"{self.key}: {'passed' if self.success else 'FAILED'} {self.evaluated - self.unsuccessful} of "
            f"{self.evaluated} expectations on {self.rows} rows ({self.flagged_outliers} return outlier(s) flagged)"
        )
        return "; ".join([head, *(f.describe() for f in self.failures)])


def count_missing_bars(ts: pl.Series, timeframe: Timeframe, calendar: Literal["weekdays", "continuous"]) -> pl.Series:
    """Bars missing before each bar: (business-time gap to the previous bar / timeframe) - 1, floored at 0.

    `weekdays` skips Saturdays and Sundays, a weekend timestamp counting as the following Monday 00:00 UTC
    (so FX's Fri 21:00 -> Sun 22:00 is 2 missing hourly bars); `continuous` is wall-clock. The first bar is null.
    """
    frame = ts.to_frame("ts")
    if calendar == "weekdays":
        day_us = 86_400 * 1_000_000
        weekday = pl.col("ts").dt.weekday() <= 5
        time_of_day_us = pl.col("ts") - pl.col("ts").dt.truncate("1d")
        clock = pl.business_day_count(pl.lit(_BUSINESS_EPOCH), pl.col("ts").dt.date()).cast(pl.Int64) * day_us + (
            pl.when(weekday).then(time_of_day_us.dt.total_microseconds()).otherwise(0)
        )
    else:
        clock = pl.col("ts").dt.epoch("us")
    gap_bars = clock.diff().cast(pl.Float64) / (timeframe.seconds * 1_000_000)
    # FX's Sunday-evening bars all map onto Monday 00:00 and would count -1; duplicates and disorder have
    # their own expectations, so negatives are floored rather than reported here.
    return frame.select((gap_bars - 1.0).clip(lower_bound=0.0).alias("missing_bars")).to_series()


def trailing_return_z(close: pl.Series, window: int) -> pl.Series:
    """|log return| over the rolling std of the previous `window` log returns (shifted: only the past is used).

    Null until `window` past returns exist, and where the ratio is undefined (0/0, non-positive prices).
    """
    log_ret = (pl.col("close") / pl.col("close").shift(1)).log()
    z = log_ret.abs() / log_ret.rolling_std(window).shift(1)
    return close.to_frame("close").select(z.fill_nan(None).alias("return_z")).to_series()


def with_check_columns(bars: pl.DataFrame, spec: DatasetSpec, config: ValidationConfig) -> pl.DataFrame:
    """`bars` plus the derived columns the suite checks (`max_oc`, `min_oc`, `missing_bars`, `return_z`)."""
    timeframe = Timeframe.parse(spec.timeframe)
    return bars.with_columns(
        max_oc=pl.max_horizontal("open", "close"),
        min_oc=pl.min_horizontal("open", "close"),
        missing_bars=count_missing_bars(bars["ts"], timeframe, spec.calendar),
        return_z=trailing_return_z(bars["close"], config.outlier_window),
    )


def missing_bar_tolerance(spec: DatasetSpec, config: ValidationConfig) -> int:
    """Missing bars tolerated between consecutive bars: the dataset's own value, else the gate's default."""
    return spec.max_missing_bars if spec.max_missing_bars is not None else config.max_missing_bars


def validate_bars(
    bars: pl.DataFrame, spec: DatasetSpec, config: ValidationConfig, *, docs_dir: Path | None = None
) -> ValidationReport:
    """Run the OHLCV suite on `bars` in an ephemeral GX context; with `docs_dir`, also build Data Docs there.

    Raises `SchemaError` when `bars` lacks bar columns or has uncastable types; data-quality problems
    (nulls, bad prices, gaps, ...) are reported in the returned report, not raised.
    """
    bars = conform(bars, BAR_SCHEMA, name=spec.key)
    checked = with_check_columns(bars, spec, config)
    flagged = int(checked.select((pl.col("return_z") > config.outlier_z).sum()).item() or 0)
    gx, gxe = _import_gx()

    slug = spec.key.replace("/", "__")  # GX store keys must not contain "/"
    context = gx.get_context(mode="ephemeral", project_config=_context_config(docs_dir))
    batch = (
        context.data_sources.add_pandas(spec.source)
        .add_dataframe_asset(slug)
        .add_batch_definition_whole_dataframe("whole")
    )
    suite = context.suites.add_or_update(
        gx.ExpectationSuite(name=f"ohlcv.{slug}", expectations=_expectations(gxe, spec, config))
    )
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=slug, data=batch, suite=suite))
    actions = []
    if docs_dir is not None:
        from great_expectations.checkpoint import UpdateDataDocsAction

        actions.append(UpdateDataDocsAction(name="data_docs", site_names=["ohlcv_docs"]))
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"gate.{slug}",
            validation_definitions=[definition],
            actions=actions,
            result_format={"result_format": "SUMMARY", "unexpected_index_column_names": ["ts"]},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": checked.to_pandas()})
    (run,) = result.run_results.values()
    stats = run.statistics
    failures = [_failure(r) for r in run.results if not r.success]
    return ValidationReport(
        key=spec.key,
        success=bool(result.success),
        rows=bars.height,
        evaluated=int(stats["evaluated_expectations"]),
        unsuccessful=int(stats["unsuccessful_expectations"]),
        success_percent=float(stats["success_percent"] or 0.0),
        failures=failures,
        flagged_outliers=flagged,
    )


def run_gate(spec: DatasetSpec, data_root: Path, reports_root: Path, config: ValidationConfig) -> ValidationReport:
    """Validate the raw file of `spec`: on success write `validated/`, on failure copy it to `quarantine/`.

    A missing, corrupt or non-conforming raw file raises `StoreError` naming it, before anything is written.
    Success removes stale quarantine files of the key; failure writes `<key>.failures.json` beside the
    quarantined copy and removes any stale validated file. The raw file is never touched.
    """
    raw = dataset_path(data_root, "raw", spec)
    bars = read_bars(raw)
    report = validate_bars(bars, spec, config, docs_dir=reports_root / "data_docs")
    validated = dataset_path(data_root, "validated", spec)
    quarantined = dataset_path(data_root, "quarantine", spec)
    failures_json = quarantined.with_suffix(".failures.json")
    # DVC declares both stage folders as outputs, so they must exist even when empty.
    for stage in ("validated", "quarantine"):
        (data_root / stage).mkdir(parents=True, exist_ok=True)
    if report.success:
        write_frame(validated, bars)
        # Quarantine last: until it is gone, `require_validated` still refuses the key.
        quarantined.unlink(missing_ok=True)
        failures_json.unlink(missing_ok=True)
        return replace(report, output=validated)
    # Refuse downstream first, then record why, then the quarantined copy (the marker `require_validated` reads).
    validated.unlink(missing_ok=True)
    report = replace(report, output=quarantined)
    atomic_write_text(failures_json, json.dumps({"raw": str(raw), **report.to_dict()}, indent=2) + "\n")
    write_frame(quarantined, bars)
    return report


def write_validation_metrics(reports: list[ValidationReport], path: Path) -> Path:
    """Write the gate's DVC metrics (per dataset and totals) as JSON, atomically, and return the path."""
    datasets = {
        r.key: {
            "success": int(r.success),
            "rows": r.rows,
            "evaluated": r.evaluated,
            "unsuccessful": r.unsuccessful,
            "success_percent": r.success_percent,
            "flagged_outliers": r.flagged_outliers,
        }
        for r in reports
    }
    passed = sum(1 for r in reports if r.success)
    metrics = {
        "datasets": datasets,
        "totals": {"datasets": len(reports), "passed": passed, "failed": len(reports) - passed},
    }
    return atomic_write_text(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def require_validated(spec: DatasetSpec, data_root: Path) -> Path:
    """Return the validated file of `spec`, or raise `ValidationFailedError` saying why it is refused."""
    validated = dataset_path(data_root, "validated", spec)
    quarantined = dataset_path(data_root, "quarantine", spec)
    if quarantined.exists():
        raise ValidationFailedError(
            f"{spec.key} failed validation and is quarantined at {quarantined} "
            f"(failures: {quarantined.with_suffix('.failures.json')}); "
            "fix the data and re-run `gpt-trader data validate`"
        )
    if not validated.exists():
        raise ValidationFailedError(f"{spec.key} has not been validated yet: run `gpt-trader data validate` first")
    return validated


def _import_gx() -> tuple[Any, Any]:
    # GX takes seconds to import and phones home unless told not to; the user's own setting wins.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx, gxe


def _context_config(docs_dir: Path | None) -> Any:
    """In-memory stores and no progress bars; with `docs_dir`, a Data Docs site whose sources persist there.

    The site index is rebuilt from the suite and result stores on every run, so those live on disk beside
    the site (`.gx_store`) and every dataset validated into `docs_dir` stays listed in its index.
    """
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=ProgressBarsConfig(globally=False),
    )
    if docs_dir is not None:
        site = docs_dir.resolve()
        for store, folder in (("expectations_store", "expectations"), ("validation_results_store", "validations")):
            config.stores[store]["store_backend"] = {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(site / ".gx_store" / folder),
            }
        config.data_docs_sites = {
            "ohlcv_docs": {
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        }
    return config


def _expectations(gxe: Any, spec: DatasetSpec, config: ValidationConfig) -> list[Any]:
    """The OHLCV suite; derived columns come from `with_check_columns`."""
    price = {"min_value": 0.0, "strict_min": True, "max_value": config.max_price}
    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        *(gxe.ExpectColumnValuesToNotBeNull(column=col) for col in BAR_SCHEMA),
        *(gxe.ExpectColumnValuesToBeBetween(column=col, **price) for col in PRICE_COLUMNS),
        gxe.ExpectColumnValuesToBeBetween(column="volume", min_value=0.0),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="high", column_B="max_oc", or_equal=True),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="min_oc", column_B="low", or_equal=True),
        gxe.ExpectColumnValuesToBeUnique(column="ts"),
        gxe.ExpectColumnValuesToBeIncreasing(column="ts", strictly=True),
        gxe.ExpectColumnValuesToBeBetween(column="missing_bars", max_value=float(missing_bar_tolerance(spec, config))),
        gxe.ExpectColumnValuesToBeBetween(column="return_z", max_value=config.outlier_z, mostly=config.outlier_mostly),
    ]


def _failure(result: Any) -> ExpectationFailure:
    """Turn a failed GX expectation result into an `ExpectationFailure` with JSON-safe arguments and examples."""
    cfg = result.expectation_config
    kwargs = {k: v for k, v in dict(cfg.kwargs).items() if k != "batch_id"}
    if "column" in kwargs:
        column: str | None = str(kwargs["column"])
    elif "column_A" in kwargs:
        column = f"{kwargs['column_A']}, {kwargs['column_B']}"
    else:
        column = None
    info: Mapping[str, Any] = result.result or {}
    examples: list[Any] = list(info.get("partial_unexpected_index_list") or info.get("partial_unexpected_list") or [])
    if not examples and "observed_value" in info:
        examples = [{"observed_value": info["observed_value"]}]
    count = info.get("unexpected_count")
    return ExpectationFailure(
        expectation=str(cfg.type),
        column=column,
        kwargs=_json_safe(kwargs),
        unexpected_count=None if count is None else int(count),
        unexpected_examples=_json_safe(examples[:_EXAMPLES]),
    )


def _json_safe(value: Any) -> Any:
    """Recursively convert GX/numpy/pandas values to JSON types (timestamps as ISO strings, NaN as None)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, datetime | date):
        return value.isoformat()
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return _json_safe(item())
        except (TypeError, ValueError):
            pass
    isoformat = getattr(value, "isoformat", None)  # numpy datetime64 via pandas, NaT
    if callable(isoformat):
        return str(isoformat())
    return str(value)
