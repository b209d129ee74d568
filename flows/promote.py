"""`promote_flow`: the promotion gate for one model kind or all of them."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.retries import IO_RETRIES
from gpt_trader.core.markdown import markdown_table
from gpt_trader.registry.lifecycle import KINDS, promote_model
from gpt_trader.settings import Settings, load_settings


# Never cached: the decision depends on the registry's current state, not only on the inputs. Registry I/O: retried
# when the registry is unreachable.
@task(name="promote-model", cache_policy=NO_CACHE, task_run_name="promote-{kind}", **IO_RETRIES)
def promote_task(settings: Settings, kind: str, extra_tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Score challenger and champion on the same window, decide, promote or record; publish the decision."""
    report = promote_model(settings, kind, extra_tags=extra_tags)
    d = report.decision
    verdict = "PROMOTED" if d.promote else "REJECTED"
    body = (
        f"# {report.name}: challenger v{d.challenger_version} {verdict}\n\n"
        f"Champion before: {('v' + d.champion_version) if d.champion_version else 'none'}. Window: {report.window}.\n\n"
        + markdown_table(report.rows())
        + "\n**Reasons**\n\n"
        + "\n".join(f"- {r}" for r in d.reasons)
        + "\n"
    )
    create_markdown_artifact(body, key=f"promotion-{kind}", description=f"Promotion decision for {report.name}")
    return {
        "kind": kind,
        "model": report.name,
        "challenger": d.challenger_version,
        "champion_before": d.champion_version,
        "promoted": d.promote,
        "reasons": list(d.reasons),
    }


@flow(name="promote", log_prints=True)
def promote_flow(kind: str = "all", config: str | None = None, params: str = "params.yaml") -> list[dict[str, Any]]:
    """Judge the challenger of `kind` ("transformer", "ppo", "dqn" or "all")."""
    settings = load_settings(config, params=params)
    kinds = list(KINDS) if kind == "all" else [kind]
    return [promote_task(settings, k) for k in kinds]
