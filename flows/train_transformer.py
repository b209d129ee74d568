"""`train_transformer_flow`: train the market transformer and register it as the `challenger`."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.retries import IO_RETRIES
from gpt_trader.core.markdown import markdown_table
from gpt_trader.ml.transformer.stages import train_stage
from gpt_trader.registry.lifecycle import challenger_version, retrain_tags, run_link
from gpt_trader.settings import Settings, load_settings

HEADLINE = ("best_val_loss", "val_loss", "train_loss", "epochs")


# Not cached: each training is an MLflow run and a registered challenger; replaying a cached result would skip
# both and leave the promote step judging whatever challenger is left over. Seeds make a rerun reproduce the model,
# which is also why a tracking/registry outage may retry the whole task.
@task(name="train-transformer", cache_policy=NO_CACHE, **IO_RETRIES)
def train_transformer_task(settings: Settings, registration_tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Train, save, track and register; publishes the headline metrics and a link to the MLflow run."""
    trader = train_stage(settings, registration_tags=registration_tags)
    version = challenger_version(settings, "transformer") if settings.registry.register_models else None
    row = {
        "model": settings.registry.transformer_model,
        "version": version,
        "run_id": trader.run_id,
        **{k: trader.metrics[k] for k in HEADLINE if k in trader.metrics},
    }
    create_markdown_artifact(markdown_table([row]), key="transformer-training", description="Transformer training")
    if trader.run_id:
        create_link_artifact(
            run_link(settings, trader.run_id), link_text=f"MLflow run {trader.run_id}", key="transformer-run"
        )
    return row


@flow(name="train_transformer", log_prints=True)
def train_transformer_flow(config: str | None = None, params: str = "params.yaml") -> dict[str, Any]:
    """Train the transformer on the current features and register it as the challenger."""
    settings = load_settings(config, params=params)
    return train_transformer_task(settings, retrain_tags("manual", None))
