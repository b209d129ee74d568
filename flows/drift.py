"""`drift_flow`: scheduled data-drift check of one dataset; drift emits `gpt_trader.drift.detected`.

The event is what starts retraining: the `retrain` deployment's trigger matches it (see prefect.yaml).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.retries import IO_RETRIES
from gpt_trader.monitoring.drift import DriftCheck, DriftConfig, check_drift, drift_columns, drift_markdown
from gpt_trader.monitoring.events import emit_drift_detected
from gpt_trader.settings import Settings, load_settings


def drift_config(settings: Settings, current_bars: int) -> DriftConfig:
    """`monitoring.drift` with the flow's `current_bars`."""
    base = settings.monitoring.drift
    return base.model_copy(update={"current_bars": current_bars})


@task(name="check-drift", cache_policy=NO_CACHE)
def check_drift_task(settings: Settings, dataset: str, current_bars: int) -> DriftCheck:
    """Compare the training window of `dataset`'s features with its latest bars and write the report."""
    config = drift_config(settings, current_bars)
    numerical, categorical = drift_columns(settings.features, config)
    features = Path(settings.paths.data, "features", f"{dataset}.parquet")
    return check_drift(features, dataset, numerical, config, settings.paths.reports, categorical_columns=categorical)


# Talks to the Prefect API's event stream: retried when it is unreachable.
@task(name="emit-drift-detected", cache_policy=NO_CACHE, **IO_RETRIES)
def emit_task(check: DriftCheck) -> str | None:
    """Emit `gpt_trader.drift.detected` for the dataset; returns the event id."""
    return emit_drift_detected(check.dataset, check.result, report_path=check.paths.html)


@flow(name="drift", log_prints=True)
def drift_flow(
    config: str | None = None,
    params: str = "params.yaml",
    dataset: str = "bundled/SPX_1d",
    current_bars: int = 250,
) -> dict[str, Any]:
    """Check one dataset for drift, publish the report as artifacts, and emit the event when it drifted."""
    settings = load_settings(config, params=params)
    check = check_drift_task(settings, dataset, current_bars)
    create_markdown_artifact(drift_markdown(check), key="drift-summary", description=f"Data drift: {dataset}")
    # This run's own (timestamped) report: `latest.html` moves on with the next run; the dashboard links that one.
    create_link_artifact(check.paths.html.resolve().as_uri(), link_text=f"Drift report: {dataset}", key="drift-report")
    event_id = emit_task(check) if check.result.drift_detected else None
    return {**check.summary(), "event_id": event_id}
