"""`retrain_flow`: capture -> validate -> features -> train transformer and RL -> evaluate -> promote.

Runs on a schedule (deployment `retrain-daily`) and on the event `gpt_trader.drift.detected` (its trigger passes
`reason=drift` and the drifted `dataset`). The tasks call the same library functions as the DVC stages and the
CLI; lineage lives on every registered version (git commit, feature-file sha256 and DVC md5, params JSON, seeds,
library versions, training range, and the retrain reason and Prefect flow run id). A failing validation gate
fails the flow before any training, so the registry, and with it the serving champion, stay untouched.
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.context import TaskRunContext
from prefect.runtime import flow_run

from flows.build_features import features_cache_key, features_task
from flows.capture import capture_task
from flows.evaluate import evaluate_task
from flows.promote import promote_task
from flows.train_rl import agent_list, train_rl_task
from flows.train_transformer import train_transformer_task
from flows.validate import validate_task
from gpt_trader.core.markdown import markdown_table
from gpt_trader.data.stages import features_inputs_outputs
from gpt_trader.registry.lifecycle import retrain_tags
from gpt_trader.settings import Settings, load_settings


def fresh_features_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """The features cache key, but never a hit while an output file is missing.

    `features_cache_key` hashes a missing output by its file name only, so a record stored when the outputs did not
    yet exist (another checkout, a `make clean`) would be "hit" and skip building the files training needs.
    """
    settings: Settings = parameters["settings"]
    _, outputs = features_inputs_outputs(settings)
    if not all(p.is_file() for p in outputs):
        return f"features-missing-{uuid.uuid4().hex}"
    return features_cache_key(context, parameters)


STEPS = ("capture", "validate", "features", "train transformer", "train rl", "evaluate", "promote")


@flow(name="retrain", log_prints=True)
def retrain_flow(
    config: str | None = None,
    params: str = "params.yaml",
    reason: str = "schedule",
    dataset: str | None = None,
    agent: str = "all",
    dry_run: bool = False,
) -> dict[str, Any]:
    """Retrain every model on fresh data and let the gate judge the challengers.

    `dry_run=True` only records what would run (the plan artifact), for checking schedules and triggers cheaply.
    """
    settings = load_settings(config, params=params)
    tags = retrain_tags(reason, dataset, str(flow_run.id) if flow_run.id else None)
    agents = agent_list(agent)
    plan = {"reason": reason, "dataset": dataset or "-", "agents": ",".join(agents), "dry_run": dry_run}
    create_markdown_artifact(
        markdown_table([plan]) + "\nSteps: " + " -> ".join(STEPS) + "\n", key="retrain-plan", description="Retrain"
    )
    if dry_run:
        return {**plan, "steps": list(STEPS)}
    capture_task(settings)
    validate_task(settings)  # raises after quarantining a failing dataset: nothing below runs
    features_task.with_options(cache_key_fn=fresh_features_cache_key)(settings)
    transformer = train_transformer_task(settings, tags)
    # The gym-anytrading peer comparison is research, not needed to register or judge a model: skipped here.
    rl = train_rl_task(settings, agents, False, tags)
    evaluation = evaluate_task(settings)
    decisions = [promote_task(settings, kind, tags) for kind in ("transformer", *agents)]
    create_markdown_artifact(
        markdown_table(decisions, ["model", "challenger", "champion_before", "promoted"]),
        key="retrain-decisions",
        description="Promotion decisions of this retrain",
    )
    return {**plan, "transformer": transformer, "rl": rl, "evaluation": evaluation, "decisions": decisions}
