"""`capture_flow`: fetch new bars for every configured dataset (incremental, idempotent)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.retries import IO_RETRIES
from gpt_trader.core.markdown import markdown_table
from gpt_trader.data.stages import capture_stage
from gpt_trader.settings import Settings, load_settings


# Network I/O: transient failures retried with growing, jittered delays; never cached (the provider may have new
# bars).
@task(name="capture-market-data", cache_policy=NO_CACHE, **IO_RETRIES)
def capture_task(settings: Settings) -> list[dict[str, Any]]:
    """Capture every dataset; returns one row per dataset."""
    return [{k: str(v) if k == "path" else v for k, v in asdict(r).items()} for r in capture_stage(settings)]


@flow(name="capture", log_prints=True)
def capture_flow(config: str | None = None, params: str = "params.yaml") -> list[dict[str, Any]]:
    """Capture market data; a markdown artifact lists rows added per dataset."""
    rows = capture_task(load_settings(config, params=params))
    create_markdown_artifact(
        markdown_table(rows, ["key", "added", "skipped", "total", "path"]),
        key="capture-summary",
        description="Bars captured per dataset",
    )
    return rows
