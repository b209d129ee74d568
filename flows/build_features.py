"""`build_features_flow`: features and labels for every validated dataset, cached on input data and params."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.context import TaskRunContext

from gpt_trader.core.fingerprint import hash_files
from gpt_trader.core.markdown import markdown_table
from gpt_trader.data.stages import features_inputs_outputs, features_stage
from gpt_trader.settings import Settings, load_settings


def features_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Same validated data, same feature params, same output files: the previous run's result stands."""
    settings: Settings = parameters["settings"]
    inputs, outputs = features_inputs_outputs(settings)
    # Output paths (not contents) are part of the key: the same data built into another directory is other work.
    key = {"features": settings.features.model_dump(mode="json"), "outputs": [str(p.resolve()) for p in outputs]}
    return "features-" + hash_files(inputs, key)


@task(name="build-features", cache_key_fn=features_cache_key, persist_result=True)
def features_task(settings: Settings) -> list[str]:
    """Build features; refuses (fails) on any dataset that is not validated."""
    return [str(p) for p in features_stage(settings)]


@flow(name="build_features", log_prints=True)
def build_features_flow(config: str | None = None, params: str = "params.yaml") -> list[str]:
    """Build the feature files and publish their label balance."""
    settings = load_settings(config, params=params)
    _, outputs = features_inputs_outputs(settings)
    # A cached result is only true while its files exist: rebuild (and re-cache) when any was deleted.
    paths = features_task.with_options(refresh_cache=not all(p.exists() for p in outputs))(settings)
    rows = [{"file": p, "exists": Path(p).exists()} for p in paths]
    create_markdown_artifact(markdown_table(rows), key="features-summary", description="Feature files")
    return paths
