"""`validate_flow`: the Great Expectations gate; a failing dataset fails the flow so nothing downstream runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from gpt_trader.core.markdown import markdown_table
from gpt_trader.data.stages import validate_stage
from gpt_trader.settings import Settings, load_settings

COLUMNS = ["key", "success", "rows", "evaluated", "unsuccessful", "flagged_outliers"]


@task(name="validate-market-data", cache_policy=NO_CACHE)
def validate_task(settings: Settings) -> list[dict[str, Any]]:
    """Validate every dataset; raises (failing the flow) after quarantining any that fail."""
    rows: list[dict[str, Any]] = []
    try:
        validate_stage(settings, lambda report: rows.append(report.to_dict()))
    finally:
        # The verdicts are published even when the gate fails, so the UI shows what was quarantined and why.
        create_markdown_artifact(
            markdown_table(rows, COLUMNS), key="validation-summary", description="Validation gate verdicts"
        )
        docs = Path(settings.paths.reports, "data_docs", "index.html").resolve()
        if docs.exists():
            create_link_artifact(docs.as_uri(), link_text="Data Docs", key="data-docs")
    return rows


@flow(name="validate", log_prints=True)
def validate_flow(config: str | None = None, params: str = "params.yaml") -> list[dict[str, Any]]:
    """Run the validation gate on the captured data."""
    return validate_task(load_settings(config, params=params))
