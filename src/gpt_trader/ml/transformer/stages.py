"""The `train_transformer` and `evaluate_transformer` pipeline stages as library calls (CLI and DVC call these)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from gpt_trader.core.errors import DataError
from gpt_trader.core.fs import atomic_write_text
from gpt_trader.data.config import DatasetSpec

if TYPE_CHECKING:
    from gpt_trader.ml.transformer.evaluate import DatasetResult
    from gpt_trader.ml.transformer.trader import TransformerTrader
    from gpt_trader.settings import Settings

Log = Callable[[str], None]


def feature_files(settings: Settings, symbols: list[str]) -> tuple[list[Path], str]:
    """Feature parquet files of `symbols` (configured datasets) and their shared timeframe."""
    from gpt_trader.data.store import dataset_path

    specs: dict[str, DatasetSpec] = {spec.symbol: spec for spec in settings.data.datasets}
    unknown = [s for s in symbols if s not in specs]
    if unknown:
        raise DataError(f"symbols {unknown} are not configured datasets (have {sorted(specs)})")
    timeframes = {specs[s].timeframe for s in symbols}
    if len(timeframes) > 1:
        raise DataError(f"symbols {symbols} mix timeframes {sorted(timeframes)}; one model needs one bar length")
    paths = [dataset_path(Path(settings.paths.data), "features", specs[s]) for s in symbols]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"feature files {missing} not found: run `gpt-trader data features` (or `dvc repro`) first")
    return paths, timeframes.pop()


def train_stage(
    settings: Settings, log: Log = print, *, registration_tags: dict[str, str] | None = None
) -> TransformerTrader:
    """Train the configured model on `train_symbols` (last `val_fraction` validates), track it, save it, and
    register it as the `challenger` of `registry.transformer_model` (unless `registry.register_models` is off).
    """
    from gpt_trader.ml.transformer.trader import TransformerTrader
    from gpt_trader.registry.lifecycle import register_training

    cfg = settings.ml.transformer
    paths, timeframe = feature_files(settings, list(cfg.train_symbols))
    frame = pl.concat([pl.read_parquet(p) for p in paths], how="vertical_relaxed")
    trader = TransformerTrader(
        cfg,
        features=settings.features,
        registry=settings.registry,
        costs=settings.costs,
        mlflow_dir=settings.paths.mlflow,
    )
    started = time.perf_counter()
    metrics = trader.train(frame, data_files=paths, run_name=f"train-{'+'.join(cfg.train_symbols)}-{timeframe}")
    wall = time.perf_counter() - started
    out = Path(settings.paths.models) / "transformer"
    trader.save(out)
    version = None
    if trader.run_id and trader.model_uri:
        version = register_training(
            settings,
            kind="transformer",
            model_uri=trader.model_uri,
            run_id=trader.run_id,
            timeframe=timeframe,
            data_files=paths,
            params={
                "transformer": cfg.model_dump(mode="json"),
                "features": settings.features.model_dump(mode="json"),
                "costs": settings.costs.model_dump(mode="json"),
            },
            seeds=[cfg.seed],
            metrics=metrics,
            extra_tags=registration_tags,
        )
    summary = {
        "symbols": list(trader.symbols),
        "timeframe": timeframe,
        "wall_secs": round(wall, 1),
        "run_id": trader.run_id,
        "model_uri": trader.model_uri,
        "registered_version": version,
        **{k: round(v, 6) for k, v in metrics.items()},
    }
    _write_json(Path(settings.paths.metrics) / "transformer_train.json", summary)
    log(f"trained {'+'.join(trader.symbols)} ({timeframe}) in {wall:.0f} s -> {out}; MLflow run {trader.run_id}")
    if version:
        log(f"registered {settings.registry.transformer_model} v{version} as challenger")
    return trader


@dataclass(frozen=True, slots=True)
class EvaluationOutput:
    """What the evaluation stage produced."""

    results: list[DatasetResult]
    report: Path
    metrics: Path
    run_id: str | None
    wall_secs: float


def evaluate_stage(settings: Settings, log: Log = print, *, track: bool = True) -> EvaluationOutput:
    """Walk-forward evaluation of every configured group; writes DVC metrics, the report and an MLflow run."""
    from gpt_trader.ml.evaluation import plot_equity_curves
    from gpt_trader.ml.transformer.evaluate import evaluate_group, render_report

    cfg = settings.ml.transformer
    started = time.perf_counter()
    results: list[DatasetResult] = []
    files: list[Path] = []
    for group in cfg.evaluation.groups:
        paths, timeframe = feature_files(settings, list(group))
        files += paths
        frame = pl.concat([pl.read_parquet(p) for p in paths], how="vertical_relaxed")
        log(f"evaluating {'+'.join(group)} ({timeframe})")
        results += evaluate_group(frame, timeframe, cfg, settings.features, settings.costs, log=log)
    wall = time.perf_counter() - started
    report_dir = Path(settings.paths.reports) / "transformer"
    report_dir.mkdir(parents=True, exist_ok=True)
    curves = {f"{r.symbol} {r.timeframe}": (r.ts, r.equity) for r in results}
    plot_equity_curves(curves, report_dir / "equity.png")
    report = atomic_write_text(
        report_dir / "report.md", render_report(results, config=cfg, costs=settings.costs, wall_secs=wall)
    )
    metrics: dict[str, Any] = {f"{r.symbol}_{r.timeframe}": _rounded(r.metrics()) for r in results}
    metrics["wall_secs"] = round(wall, 1)
    metrics_path = _write_json(Path(settings.paths.metrics) / "transformer.json", metrics)
    run_id = _track_evaluation(settings, results, files, report_dir) if track else None
    return EvaluationOutput(results, report, metrics_path, run_id, wall)


def _track_evaluation(settings: Settings, results: list[DatasetResult], files: list[Path], report_dir: Path) -> str:
    import mlflow

    from gpt_trader.ml.transformer.tracking import MAX_PARAM_LENGTH, flatten
    from gpt_trader.registry.tracking import provenance_tags, setup_experiment

    cfg = settings.ml.transformer
    setup_experiment(settings.registry.transformer_experiment, settings.registry, settings.paths.mlflow)
    with mlflow.start_run(run_name="walk-forward") as run:
        params = {
            **flatten("transformer.", cfg.model_dump(mode="json")),
            **flatten("features.", settings.features.model_dump(mode="json")),
            **flatten("costs.", settings.costs.model_dump(mode="json")),
        }
        mlflow.log_params({k: str(v)[:MAX_PARAM_LENGTH] for k, v in params.items()})
        mlflow.set_tags({**provenance_tags(files, dvc_out="data/features"), "stage": "evaluate_transformer"})
        for r in results:
            mlflow.log_metrics({f"{r.symbol}_{r.timeframe}.{k}": v for k, v in r.metrics().items() if _finite(v)})
        mlflow.log_artifacts(str(report_dir), artifact_path="evaluation")
        return str(run.info.run_id)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and value == value and abs(value) != float("inf")


def _rounded(metrics: dict[str, float]) -> dict[str, float | None]:
    # JSON has no NaN: undefined figures (e.g. accuracy with no calls) are written as null.
    return {k: (round(v, 6) if _finite(v) else None) for k, v in metrics.items()}


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
