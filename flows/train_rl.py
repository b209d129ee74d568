"""`train_rl_flow`: train the deep-RL agents and register each as the `challenger` of its model."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.retries import IO_RETRIES
from gpt_trader.core.markdown import markdown_table
from gpt_trader.ml.rl.stage import run_rl_stage
from gpt_trader.registry.lifecycle import retrain_tags, run_link
from gpt_trader.settings import Settings, load_settings

AGENTS = ("ppo", "dqn")
COLUMNS = [
    "agent",
    "version",
    "sharpe_ratio",
    "total_return",
    "max_drawdown",
    "buy_and_hold_sharpe",
    "timesteps",
    "run_id",
]


def agent_list(agent: str) -> list[str]:
    """ "all" -> every agent; otherwise a comma-separated subset of ppo, dqn."""
    return list(AGENTS) if agent == "all" else [a.strip() for a in agent.split(",") if a.strip()]


# Not cached, like the transformer: training produces MLflow runs and registered challengers (side effects).
# Retried (seeded, so reproducibly) when the tracking/registry store was unreachable.
@task(name="train-rl-agents", cache_policy=NO_CACHE, **IO_RETRIES)
def train_rl_task(
    settings: Settings,
    agents: list[str],
    peer: bool | None = None,
    registration_tags: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Train and register `agents`; publishes held-out figures beside buy-and-hold and links to the runs."""
    out = run_rl_stage(settings, agents, peer=peer, progress=print, registration_tags=registration_tags)
    rows = []
    for agent, r in out["results"].items():
        rows.append(
            {
                "agent": agent,
                "version": r.get("registered_version"),
                "sharpe_ratio": r["sharpe_ratio"],
                "total_return": r["total_return"],
                "max_drawdown": r["max_drawdown"],
                "buy_and_hold_sharpe": r["baselines"]["buy_and_hold"]["sharpe_ratio"],
                "timesteps": r["timesteps"],
                "run_id": r["run_id"],
            }
        )
        create_link_artifact(
            run_link(settings, r["run_id"]), link_text=f"MLflow run {agent} {r['run_id']}", key=f"rl-{agent}-run"
        )
    create_markdown_artifact(
        markdown_table(rows, COLUMNS), key="rl-training", description="RL agents: held-out figures after costs"
    )
    return rows


@flow(name="train_rl", log_prints=True)
def train_rl_flow(
    agent: str = "all", config: str | None = None, params: str = "params.yaml", peer: bool | None = None
) -> list[dict[str, Any]]:
    """Train `agent` ("ppo", "dqn" or "all") on the configured symbol and register each as challenger."""
    settings = load_settings(config, params=params)
    return train_rl_task(settings, agent_list(agent), peer, retrain_tags("manual", None))
