"""Drift detection on real S&P 500 features: crisis vs calm drifts, same-distribution windows do not.

Every window is cut from the bundled SPX daily series (1999-2018) run through the real feature pipeline. The
windows here have at most 1,000 reference rows, so Evidently uses the two-sample K-S test per column (drift when
p < 0.05) and the dataset drifts when the share of drifted columns reaches `drift_share_threshold`.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import numpy as np
import polars as pl
import pytest

from gpt_trader.core.errors import DataError
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.data.config import FeaturesConfig
from gpt_trader.data.features import CALENDAR_COLUMNS, build_features
from gpt_trader.data.sources.bundled import BundledSource
from gpt_trader.monitoring.drift import (
    DriftCheck,
    DriftConfig,
    DriftResult,
    check_drift,
    detect_drift,
    drift_columns,
    drift_markdown,
    drift_report_dir,
    split_windows,
    write_drift_report,
)
from gpt_trader.monitoring.events import DRIFT_DETECTED, dataset_resource_id, emit_drift_detected, resource_id

FEATURES = FeaturesConfig()
COLUMNS, _ = drift_columns(FEATURES, DriftConfig())
CONFIG = DriftConfig()


def _between(df: pl.DataFrame, start: date, end: date) -> pl.DataFrame:
    ts = pl.col("ts")
    return df.filter((ts >= datetime(start.year, start.month, start.day, tzinfo=UTC)) & (ts < _utc(end)))


def _utc(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@pytest.fixture(scope="module")
def spx() -> pl.DataFrame:
    """Real SPX daily features 1999-2018 (4,971 rows after warm-up)."""
    bars = BundledSource().fetch("SPX", None, None, Timeframe.parse("1d"))
    return build_features(bars, FEATURES)


@pytest.fixture(scope="module")
def calm(spx: pl.DataFrame) -> pl.DataFrame:
    """2017: the calmest year of the series (251 bars)."""
    return _between(spx, date(2017, 1, 1), date(2018, 1, 1))


@pytest.fixture(scope="module")
def crisis_result(spx: pl.DataFrame, calm: pl.DataFrame) -> DriftResult:
    """Sep 2008 - May 2009 (Lehman to the rebound, 187 bars) against the 2017 reference."""
    return detect_drift(calm, _between(spx, date(2008, 9, 1), date(2009, 6, 1)), COLUMNS, CONFIG)


# --- drift on real regime change ---


def test_detect_drift_crisis_vs_calm_reference_detected(crisis_result: DriftResult) -> None:
    r = crisis_result
    # Measured: 11 of 12 columns drift (share 0.917); only volume_z (a z-score against its own trailing 20 bars,
    # so regime-free by construction) keeps its distribution. Volatility, returns and Bollinger width all shift.
    assert r.drift_detected
    assert r.share_drifted >= 0.8
    assert {"rvol_20", "rvol_60", "bb_width", "ret_1"} <= set(r.drifted_columns)
    assert [c.column for c in r.columns] == COLUMNS
    assert {c.method for c in r.columns} == {"K-S p_value"}
    assert all(c.score < c.threshold == 0.05 for c in r.columns if c.drifted)
    assert (r.reference.rows, r.current.rows) == (251, 187)
    assert str(r.reference.start).startswith("2017-01-03")
    assert str(r.current.end).startswith("2009-05-29")


# --- no drift on same-distribution windows ---


def test_detect_drift_random_halves_of_one_period_not_detected(spx: pl.DataFrame) -> None:
    # 2004-2007 (1,006 bars) split into two halves by a random permutation: each half is a simple random sample of
    # the same rows, so K-S's null hypothesis holds (the autocorrelation of features does not matter when the
    # assignment to halves is random) and each column is flagged with probability ~5% by chance alone. Measured on
    # seeds 0-4: shares 0, 0, 0, 0, 0.083 (one column) - far below 0.5. Seed 0 gives 0.
    period = _between(spx, date(2004, 1, 1), date(2008, 1, 1))
    order = np.random.default_rng(0).permutation(period.height)
    half = period.height // 2
    a, b = period[np.sort(order[:half])], period[np.sort(order[half:])]
    r = detect_drift(a, b, COLUMNS, CONFIG)
    assert not r.drift_detected
    assert r.share_drifted <= 2 / len(COLUMNS)


def test_detect_drift_bootstrap_resample_of_reference_not_detected(calm: pl.DataFrame) -> None:
    # A bootstrap resample (with replacement) of the 2017 window is drawn from that window's empirical
    # distribution, so only sampling noise separates them. Measured on seeds 0-2: share 0 each time.
    idx = np.random.default_rng(0).integers(0, calm.height, calm.height)
    r = detect_drift(calm, calm[idx], COLUMNS, CONFIG)
    assert not r.drift_detected
    assert r.share_drifted <= 1 / len(COLUMNS)


def test_detect_drift_scaled_columns_flagged_per_column_method_and_pandas_input(calm: pl.DataFrame) -> None:
    # The same bootstrap of 2017, with three columns scaled x3 (a volatility regime tripling returns and realized
    # vol): exactly those three drift, share 3/12 = 0.25, which a 0.25 threshold calls drift. rvol_20 is tested
    # with PSI (drift when >= 0.1) instead of K-S to exercise per-column methods; pandas input must work as polars.
    idx = np.random.default_rng(0).integers(0, calm.height, calm.height)
    scaled = ["ret_1", "ret_5", "rvol_20"]
    current = calm[idx].with_columns([pl.col(c) * 3.0 for c in scaled])
    config = DriftConfig(drift_share_threshold=0.25, per_column_method={"rvol_20": "psi"})
    r = detect_drift(calm.to_pandas(), current.to_pandas(), COLUMNS, config)
    assert r.drifted_columns == scaled
    assert r.share_drifted == pytest.approx(0.25)
    assert r.drift_detected
    psi = next(c for c in r.columns if c.column == "rvol_20")
    assert psi.method == "psi"  # a configured method is reported as named; auto-picked ones by Evidently's label
    assert psi.score >= psi.threshold


def test_detect_drift_calendar_columns_compared_as_categorical(spx: pl.DataFrame, calm: pl.DataFrame) -> None:
    numerical, categorical = drift_columns(FEATURES, DriftConfig(include_calendar=True))
    assert numerical == COLUMNS
    assert categorical == list(CALENDAR_COLUMNS)
    # Daily bars: minute_of_day and the session flags are constant; day_of_week is ~uniform in both years.
    current = _between(spx, date(2016, 1, 1), date(2017, 1, 1))
    r = detect_drift(calm, current, ["ret_1"], CONFIG, categorical_columns=["day_of_week", "is_asia_session"])
    by = {c.column: c for c in r.columns}
    assert not by["day_of_week"].drifted
    assert "chi" in by["day_of_week"].method.lower() or "jensen" in by["day_of_week"].method.lower()


# --- windows ---


def test_split_windows_reference_is_training_fraction_and_never_overlaps_current(spx: pl.DataFrame) -> None:
    w = split_windows(spx.reverse(), DriftConfig(current_bars=250))  # unsorted input is sorted first
    assert w.current.height == 250
    assert w.current["ts"].max() == spx["ts"].max()
    assert w.reference.height == int(spx.height * 0.7)
    assert w.reference["ts"].min() == spx["ts"].min()
    assert w.reference["ts"].max() < w.current["ts"].min()
    # A fraction reaching into the current window is clipped to the bars before it.
    w = split_windows(spx, DriftConfig(reference_fraction=1.0, current_bars=100))
    assert w.reference.height == spx.height - 100
    assert w.reference["ts"].max() < w.current["ts"].min()


def test_split_windows_explicit_reference_dates(spx: pl.DataFrame) -> None:
    w = split_windows(spx, DriftConfig(reference_start=date(2017, 1, 1), reference_end=date(2018, 1, 1)))
    assert w.reference.height == 251
    assert w.reference["ts"].min() >= _utc(date(2017, 1, 1))
    assert w.reference["ts"].max() < _utc(date(2018, 1, 1))


def test_split_windows_too_few_rows_errors(spx: pl.DataFrame) -> None:
    with pytest.raises(DataError, match=r"reference window .* fewer than min_rows=30"):
        split_windows(spx.tail(260), DriftConfig(current_bars=250))
    with pytest.raises(DataError, match=r"current window has 20 rows"):
        split_windows(spx.tail(20), DriftConfig())
    with pytest.raises(DataError, match="no timestamp column 'time'"):
        split_windows(spx, DriftConfig(), ts_column="time")


# --- bad input: errors name the column and the window (raised before Evidently is imported) ---


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda df: df.drop("rsi"), r"current window lacks column\(s\) \['rsi'\]"),
        (
            lambda df: df.with_columns(
                pl.when(pl.int_range(pl.len()) == 3).then(float("nan")).otherwise(pl.col("macd")).alias("macd")
            ),
            r"current window column 'macd' has 0 null and 1 NaN/inf",
        ),
        (
            lambda df: df.with_columns(
                pl.when(pl.int_range(pl.len()) < 2).then(None).otherwise(pl.col("bb_pos")).alias("bb_pos")
            ),
            r"current window column 'bb_pos' has 2 null",
        ),
        (lambda df: df.with_columns(pl.col("ret_1").cast(pl.String)), r"column 'ret_1' is String, not numeric"),
        (lambda df: df.head(10), r"current window has 10 rows, fewer than min_rows=30"),
    ],
    ids=["missing", "nan", "null", "dtype", "rows"],
)
def test_detect_drift_bad_current_window_names_the_problem(calm: pl.DataFrame, mutate, pattern) -> None:
    with pytest.raises(DataError, match=pattern):
        detect_drift(calm, mutate(calm), COLUMNS, CONFIG)


def test_detect_drift_no_or_duplicate_columns_error(calm: pl.DataFrame) -> None:
    with pytest.raises(DataError, match="no columns"):
        detect_drift(calm, calm, [], CONFIG)
    with pytest.raises(DataError, match=r"more than once: \['rsi'\]"):
        detect_drift(calm, calm, ["rsi", "rsi"], CONFIG)


def test_drift_config_refuses_unknown_keys_and_methods() -> None:
    with pytest.raises(ValueError, match="extra"):
        DriftConfig(drift_share=0.5)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="method"):
        DriftConfig(method="kolmogorov")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not before"):
        DriftConfig(reference_start=date(2018, 1, 1), reference_end=date(2017, 1, 1))


# --- report files ---


def test_write_drift_report_timestamped_and_latest_files_pruned(crisis_result: DriftResult, tmp_path) -> None:
    t0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
    first = write_drift_report(crisis_result, tmp_path, "bundled/SPX_1d", now=t0, keep=1)
    folder = tmp_path / "drift" / "bundled" / "SPX_1d"
    assert first.html == folder / "20260105T060000Z.html"
    assert drift_report_dir(tmp_path, "bundled/SPX_1d") == folder
    html = first.html.read_text()
    assert html.lstrip().startswith("<!DOCTYPE html>")
    assert "rvol_20" in html
    assert first.latest_html.read_text() == html
    summary = json.loads(first.latest_json.read_text())
    assert summary["dataset"] == "bundled/SPX_1d"
    assert summary["drift_detected"] is True
    assert summary["share_drifted"] == pytest.approx(crisis_result.share_drifted)
    assert summary["report"] == str(first.html)
    assert len(summary["columns"]) == len(COLUMNS)
    second = write_drift_report(crisis_result, tmp_path, "bundled/SPX_1d", now=t0.replace(day=6), keep=1)
    # keep=1: the older stamp is pruned, latest.* stays; no temp files are left behind by the atomic writes.
    assert sorted(p.name for p in folder.iterdir()) == [
        "20260106T060000Z.html",
        "20260106T060000Z.json",
        "latest.html",
        "latest.json",
    ]
    assert second.latest_json.exists()
    with pytest.raises(ValueError, match="relative"):
        drift_report_dir(tmp_path, "../etc")


def test_check_drift_reads_features_file_and_markdown_lists_drifted_first(spx: pl.DataFrame, tmp_path) -> None:
    path = tmp_path / "features" / "bundled" / "SPX_1d.parquet"
    path.parent.mkdir(parents=True)
    spx.write_parquet(path)
    # Reference = first 70% (1999-2012, 3,479 rows, so normed Wasserstein >= 0.1) vs the last 250 bars of 2018.
    check = check_drift(path, "bundled/SPX_1d", COLUMNS, DriftConfig(), tmp_path / "reports")
    assert isinstance(check, DriftCheck)
    assert check.result.reference.rows == int(spx.height * 0.7)
    assert check.result.current.rows == 250
    assert {c.method for c in check.result.columns} == {"Wasserstein distance (normed)"}
    assert check.paths.latest_html.exists()
    summary = check.summary()
    assert summary["dataset"] == "bundled/SPX_1d"
    assert summary["drifted_columns"] == check.result.drifted_columns
    md = drift_markdown(check)
    assert "bundled/SPX_1d" in md
    assert "| column | drifted | score | method | threshold |" in md
    table = [line for line in md.splitlines() if line.startswith("| ") and "column" not in line]
    flags = [line.split("|")[2].strip() for line in table]
    assert flags == sorted(flags, key=lambda f: f != "True")  # drifted rows first
    with pytest.raises(DataError, match="no features file"):
        check_drift(tmp_path / "missing.parquet", "x/y", COLUMNS, DriftConfig(), tmp_path)


# --- event helpers that need no server (emission itself is tested against a real one in tests/flows) ---


def test_resource_ids_follow_the_documented_scheme() -> None:
    assert dataset_resource_id("bundled/SPX_1d") == "gpt_trader.dataset.bundled.SPX_1d"
    assert resource_id("bundled/SPX_1d") == "gpt_trader.dataset.bundled.SPX_1d"
    assert resource_id("model:transformer") == "gpt_trader.model.transformer"
    assert DRIFT_DETECTED == "gpt_trader.drift.detected"


def test_emit_drift_detected_refuses_a_result_without_drift(crisis_result: DriftResult) -> None:
    from dataclasses import replace

    calm_result = replace(crisis_result, drift_detected=False, share_drifted=0.1)
    with pytest.raises(ValueError, match="below the threshold"):
        emit_drift_detected("bundled/SPX_1d", calm_result)
