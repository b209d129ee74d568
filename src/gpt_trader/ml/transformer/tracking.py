"""MLflow tracking of a training run: params, provenance, per-epoch metrics, model, attention plot, report."""

from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from gpt_trader.data.features import CALENDAR_COLUMNS

if TYPE_CHECKING:
    from mlflow import ActiveRun

    from gpt_trader.ml.transformer.panel import Panel
    from gpt_trader.ml.transformer.trader import TransformerTrader

MODEL_NAME = "model"
# MLflow accepts longer values, but a param is for reading at a glance; the full config is in the model dir.
MAX_PARAM_LENGTH = 500


def frame_sha256(frame: pl.DataFrame) -> str:
    """SHA-256 of a frame's content (Arrow IPC bytes): the identity of in-memory training data."""
    buffer = io.BytesIO()
    frame.write_ipc(buffer, compression="uncompressed")
    return hashlib.sha256(buffer.getvalue()).hexdigest()


@contextmanager
def training_run(trader: TransformerTrader, *, run_name: str | None = None) -> Iterator[ActiveRun]:
    """An MLflow run in the trader's store and experiment; sets `trader.run_id`."""
    import mlflow

    from gpt_trader.registry.tracking import setup_experiment

    setup_experiment(trader.registry.transformer_experiment, trader.registry, trader.mlflow_dir)
    with mlflow.start_run(run_name=run_name) as run:
        trader.run_id = run.info.run_id
        yield run


def lightning_logger(trader: TransformerTrader, run: ActiveRun) -> Any:
    """Lightning's MLflow logger attached to the active run (explicit URI: its default is the dead file store)."""
    from lightning.pytorch.loggers import MLFlowLogger

    from gpt_trader.registry.tracking import tracking_uri

    return MLFlowLogger(
        experiment_name=trader.registry.transformer_experiment,
        tracking_uri=tracking_uri(trader.registry, trader.mlflow_dir),
        run_id=run.info.run_id,
    )


def flatten(prefix: str, data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(f"{prefix}{key}.", value))
        else:
            out[f"{prefix}{key}"] = value
    return out


def model_input_example(frame: pl.DataFrame, trader: TransformerTrader, rows: int) -> Any:
    """The pyfunc input: the last `rows` feature rows of each symbol (ts naive UTC, floats, int64 calendar).

    The widest types, so that MLflow's schema check accepts narrower inputs (it only upcasts safely).
    """
    floats = ["close", *trader.columns]
    tail = frame.sort("symbol", "ts").group_by("symbol", maintain_order=True).tail(rows)
    return tail.select(
        pl.col("ts").dt.replace_time_zone(None),
        "symbol",
        *(pl.col(c).cast(pl.Float64) for c in floats),
        *(pl.col(c).cast(pl.Int64) for c in CALENDAR_COLUMNS),
    ).to_pandas()


def log_training(
    trader: TransformerTrader,
    *,
    train_frame: pl.DataFrame,
    val_frame: pl.DataFrame | None,
    val_panel: Panel | None,
    val_label_start: int,
    data_files: list[str | Path],
) -> None:
    """Log everything but the Lightning metrics into the active run: params, tags, model, plot, report."""
    import mlflow
    from mlflow.models import infer_signature

    from gpt_trader.ml.transformer.pyfunc import TransformerPyfunc
    from gpt_trader.registry.tracking import provenance_tags

    cfg = trader.config
    params = {
        **flatten("transformer.", cfg.model_dump(mode="json")),
        **flatten("features.", trader.features.model_dump(mode="json")),
        "data.symbols": ",".join(trader.symbols),
        "data.train_rows": train_frame.height,
        "data.val_rows": 0 if val_frame is None else val_frame.height,
        "data.first_ts": str(train_frame["ts"].min()),
        "data.last_ts": str((val_frame if val_frame is not None else train_frame)["ts"].max()),
    }
    limit = MAX_PARAM_LENGTH
    mlflow.log_params({k: str(v)[:limit] for k, v in params.items()})
    tags = provenance_tags(data_files, dvc_out="data/features" if data_files else None)
    frames = [train_frame] if val_frame is None else [train_frame, val_frame]
    in_memory = hashlib.sha256("".join(frame_sha256(f) for f in frames).encode()).hexdigest()
    tags.setdefault("data_sha256", in_memory)
    tags["frame_sha256"] = in_memory
    tags.update(training_range_tags(trader, train_frame, val_frame, val_panel, val_label_start))
    mlflow.set_tags(tags)
    # Lightning already logged the per-epoch curves; only the summary figures are new here.
    summary = {k: trader.metrics[k] for k in ("best_val_loss", "epochs") if k in trader.metrics}
    mlflow.log_metrics({k: v for k, v in summary.items() if np.isfinite(v)})
    with tempfile.TemporaryDirectory(prefix="gpt-trader-run-") as tmp:
        root = Path(tmp)
        if val_panel is not None:
            _log_validation(trader, val_panel, val_label_start, root)
        model_dir = trader.save(root / "trader")
        source = val_frame if val_frame is not None else train_frame
        example = model_input_example(source, trader, cfg.max_seq_length + 2)
        output = TransformerPyfunc.__new__(TransformerPyfunc)
        output.trader = trader
        signature = infer_signature(example, output.predict(None, example))
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=TransformerPyfunc(),
            artifacts={"trader": str(model_dir)},
            signature=signature,
            input_example=example,
            # Explicit requirements: inferring them re-imports the model in a subprocess (slow).
            pip_requirements=_requirements(),
        )
        trader.model_uri = info.model_uri


def training_range_tags(
    trader: TransformerTrader,
    train_frame: pl.DataFrame,
    val_frame: pl.DataFrame | None,
    val_panel: Panel | None,
    val_label_start: int,
) -> dict[str, str]:
    """`training.*` tags: the rows the weights were fitted on and where the held-out (validation) rows begin.

    The registry's promotion window must start at or after `training.heldout_start_ts`, so that a model is never
    scored on rows it was fitted on. (Validation rows do steer early stopping and checkpoint choice.)
    """
    from gpt_trader.registry.tracking import iso_utc

    tags = {"training.symbols": ",".join(trader.symbols), "training.first_ts": iso_utc(train_frame["ts"].min())}
    if val_panel is None or len(val_panel) == 0:
        tags["training.last_ts"] = iso_utc(train_frame["ts"].max())
        return tags
    tags["training.heldout_start_ts"] = iso_utc(val_panel.ts[val_label_start])
    if val_frame is not None:
        tags["training.last_ts"] = iso_utc(train_frame["ts"].max())
    else:
        # Fitted rows end `embargo` rows before validation; the panel keeps seq_len - 1 context rows before it.
        embargo = max(trader.config.evaluation.embargo_bars, trader.features.label_horizon)
        last = val_label_start - embargo - 1
        if last >= 0:
            tags["training.last_ts"] = iso_utc(val_panel.ts[last])
    return tags


def _log_validation(trader: TransformerTrader, panel: Panel, label_start: int, root: Path) -> None:
    """Validation signal figures (metrics `val_oos_*`), a markdown report and the attention heatmap."""
    import mlflow

    from gpt_trader.ml.evaluation import evaluate_signals, markdown_table, periods_per_year
    from gpt_trader.ml.transformer.datamodule import window_ends
    from gpt_trader.ml.transformer.plots import plot_attention
    from gpt_trader.trading.costs import CostModel

    seq_len = trader.config.max_seq_length
    ends = window_ends(len(panel), seq_len, first=label_start)
    out = trader.predict_panel(panel, ends)
    ppy = periods_per_year(panel.ts) if len(panel) > 1 else 252.0
    rows = []
    for a, symbol in enumerate(trader.symbols):
        signal = out["probabilities"][:, a].argmax(axis=1) - 1
        figures = evaluate_signals(
            signal,
            panel.fwd_return[ends, a],
            panel.next_return[ends, a],
            CostModel(trader.costs),
            ppy,
            forecast=out["expected_return"][:, a],
        )
        mlflow.log_metrics(
            {f"val_oos_{symbol}_{k}": v for k, v in figures.items() if np.isfinite(v)},
        )
        rows.append({"symbol": symbol, **figures})
    columns = [
        ("symbol", "symbol"),
        ("direction_n_calls", "calls"),
        ("direction_accuracy", "accuracy"),
        ("direction_ci95_low", "CI low"),
        ("direction_ci95_high", "CI high"),
        ("direction_p_value_vs_half", "p vs 50%"),
        ("direction_detectable_accuracy", "detectable"),
        ("ic", "IC"),
        ("dm_stat", "DM"),
        ("strategy_sharpe", "Sharpe"),
        ("strategy_annual_return", "annual"),
        ("strategy_max_drawdown", "max DD"),
    ]
    report = (
        f"# Validation report (run {trader.run_id})\n\nValidation rows {len(ends)} per symbol, windows of "
        f"{seq_len} bars, after costs. In-sample for early stopping: see the walk-forward report for honest "
        f"out-of-sample figures.\n\n{markdown_table(rows, columns)}\n"
    )
    (root / "val_report.md").write_text(report, encoding="utf-8")
    mlflow.log_artifact(str(root / "val_report.md"), artifact_path="evaluation")
    attention = trader.predict_panel(panel, ends[-1:], return_attention=True)["attention"][0, 0]
    plot_attention(attention, root / "attention.png", title=f"{trader.symbols[0]}: last validation bar")
    mlflow.log_artifact(str(root / "attention.png"), artifact_path="plots")


def _requirements() -> list[str]:
    reqs = []
    for name in ("torch", "lightning", "mlflow", "polars", "pandas", "numpy", "pydantic"):
        try:
            reqs.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return reqs
