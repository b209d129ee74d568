"""`evaluate_flow`: walk-forward out-of-sample evaluation of the transformer (the research figures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.retries import IO_RETRIES
from gpt_trader.core.markdown import markdown_table
from gpt_trader.ml.transformer.stages import evaluate_stage
from gpt_trader.registry.lifecycle import run_link
from gpt_trader.settings import Settings, load_settings

KEYS = ("model_strategy_sharpe", "buy_and_hold_sharpe", "baseline_strategy_sharpe", "model_direction_accuracy")


# Tracks its run in MLflow: retried when the store is unreachable.
@task(name="evaluate-transformer-walk-forward", cache_policy=NO_CACHE, **IO_RETRIES)
def evaluate_task(settings: Settings) -> list[dict[str, Any]]:
    """Run the walk-forward evaluation; publishes per-dataset figures and links to the report and MLflow run."""
    out = evaluate_stage(settings, log=print, track=True)
    rows = [
        {"dataset": f"{r.symbol} {r.timeframe}", **{k: v for k, v in r.metrics().items() if k in KEYS}}
        for r in out.results
    ]
    create_markdown_artifact(
        markdown_table(rows, ["dataset", *KEYS]), key="transformer-evaluation", description="Walk-forward OOS"
    )
    create_link_artifact(Path(out.report).resolve().as_uri(), link_text="Evaluation report", key="evaluation-report")
    if out.run_id:
        create_link_artifact(run_link(settings, out.run_id), link_text=f"MLflow run {out.run_id}", key="evaluation-run")
    return rows


@flow(name="evaluate", log_prints=True)
def evaluate_flow(config: str | None = None, params: str = "params.yaml") -> list[dict[str, Any]]:
    """Walk-forward evaluation of the transformer on every configured group."""
    return evaluate_task(load_settings(config, params=params))
