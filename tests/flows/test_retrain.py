"""The retrain flow end to end on a tiny config against a real Prefect API and a real MLflow registry."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pytest

from flows.retrain import retrain_flow

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Tiny everything: one small real dataset (GOOGL daily), a 1-layer d_model-16 transformer for one epoch, RL agents
# for 256 steps on one seed. The gate is told not to require beating buy-and-hold (the tiny models would not)
# and given a generous latency budget (2 busy cores); the decision logic itself is unit-tested.
TINY = """
ml:
  transformer:
    d_model: 16
    n_heads: 2
    n_layers: 1
    d_ff: 32
    max_seq_length: 16
    attention_window: 8  # sliding, as params.yaml (whose 32 bars do not fit a 16-bar window)
    batch_size: 64
    max_epochs: 1
    window_stride: 16
    num_threads: 1
    train_symbols: [GOOGL]
    evaluation:
      groups: [[GOOGL]]
      folds: {default: 1}
      test_bars: {default: 100}
      val_bars: {default: 100}
      min_train_bars: 300
      max_epochs: 1
  reinforcement:
    total_timesteps: 256
    symbol: GOOGL
    timeframe: 1d
    env: {window_size: 4}
    ppo: {n_envs: 2, n_steps: 64, batch_size: 64, n_epochs: 1, net_arch: [8]}
    dqn: {buffer_size: 500, learning_starts: 64, batch_size: 16, target_update_interval: 64, net_arch: [8]}
    evaluation: {seeds: [0], random_agent_runs: 1, peer: false}
registry:
  promotion: {require_beat_buy_and_hold: false, window_bars: 100, lookback_bars: 40, latency_budget_ms: 2000}
"""

NAMES = {"transformer": "gpt-trader-transformer", "ppo": "gpt-trader-rl-ppo", "dqn": "gpt-trader-rl-dqn"}


def _artifacts(state) -> dict[str, str]:
    """The data of every artifact the flow run behind `state` (and its tasks) created, by key, read back from the
    Prefect API."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
                )
            )

    artifacts = asyncio.run(read())
    by_key = {a.key: str(a.data) for a in artifacts if a.key}
    assert len(by_key) == len([a for a in artifacts if a.key]), "an artifact key was published twice"
    return by_key


def _link(data: str) -> tuple[str, str]:
    """(text, target) of a Prefect link artifact's markdown `[text](target)`."""
    match = re.fullmatch(r"\[(.*)\]\((.*)\)", data)
    assert match, data
    return match[1], match[2]


def _client(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_retrain_flow_registers_judges_and_promotes_first_models(prefect_api, overlay, tmp_path):
    state = retrain_flow(config=overlay(TINY), reason="drift", dataset="bundled/GOOGL_1d", return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert [d["promoted"] for d in result["decisions"]] == [True, True, True]
    client = _client(tmp_path)
    for kind, name in NAMES.items():
        model = client.get_registered_model(name)
        # First model ever, sane, no buy-and-hold requirement: promoted, so the challenger alias moved to champion.
        assert model.aliases == {"champion": 1}
        tags = client.get_model_version(name, "1").tags
        assert len(tags["git_commit"]) == 40 or tags["git_commit"] == "unknown"
        assert len(tags["data_sha256"]) == 64
        assert tags["dvc_data_md5"] == "not-under-dvc"
        assert json.loads(tags["params"])  # the config section as JSON
        assert tags["seeds"] == ("42" if kind == "transformer" else "0")
        assert tags["training.symbols"] == "GOOGL"
        assert tags["training.heldout_start_ts"] < tags["promotion.window"].split(" ")[1]
        assert "version.mlflow" in tags
        assert any(k.startswith("metric.") for k in tags)
        assert tags["retrain.reason"] == "drift"
        assert tags["retrain.dataset"] == "bundled/GOOGL_1d"
        assert tags["promotion.decision"] == "promoted"
        assert tags["promotion.previous_champion"] == "none"
        assert float(tags["promotion.n_bars"]) == 100
        assert "promotion.buy_and_hold_sharpe" in tags
    # The promoted champion serves through the common interface.
    import mlflow.pyfunc

    ppo = mlflow.pyfunc.load_model(f"models:/{NAMES['ppo']}@champion")
    out = ppo.predict(ppo.input_example)
    assert set(out["position"]) <= {-1.0, 0.0, 1.0}
    assert (tmp_path / "metrics" / "transformer.json").is_file()  # the walk-forward evaluation ran

    # The Prefect UI shows the decisions and links to the runs: read the artifacts back from the API.
    artifacts = _artifacts(state)
    for decision in result["decisions"]:
        kind, name = decision["kind"], decision["model"]
        assert name == NAMES[kind]
        tags = client.get_model_version(name, "1").tags
        body = artifacts[f"promotion-{kind}"]
        assert body.startswith(f"# {name}: challenger v1 PROMOTED\n")
        assert f"Champion before: none. Window: {tags['promotion.window']}." in body
        assert f"| {name} | challenger | 1 |" in body
        assert "| champion |" not in body  # first model ever: nothing to compare against
        reasons = body.split("**Reasons**\n\n", 1)[1].strip().splitlines()
        assert reasons == [f"- {r}" for r in decision["reasons"]]
        assert "- no current champion" in reasons
        assert "; ".join(decision["reasons"]) == tags["promotion.reasons"]
    assert "| gpt-trader-rl-dqn | 1 | - | True |" in artifacts["retrain-decisions"]
    # The training run each version was registered from (for RL the agent's parent run; its model sits in a
    # nested per-seed run).
    runs = {
        "transformer-run": client.get_model_version(NAMES["transformer"], "1").tags["run_id"],
        "rl-ppo-run": client.get_model_version(NAMES["ppo"], "1").tags["run_id"],
        "rl-dqn-run": client.get_model_version(NAMES["dqn"], "1").tags["run_id"],
    }
    assert runs["transformer-run"] == result["transformer"]["run_id"]
    assert [r["run_id"] for r in result["rl"]] == [runs["rl-ppo-run"], runs["rl-dqn-run"]]
    evaluation_run = _link(artifacts["evaluation-run"])[0].removeprefix("MLflow run ")
    runs["evaluation-run"] = evaluation_run
    for key, run_id in runs.items():
        text, target = _link(artifacts[key])
        assert text.endswith(f" {run_id}"), (key, text)
        # The embedded store has no UI page: the link opens the run's own artifact directory.
        run = client.get_run(run_id)
        assert target == run.info.artifact_uri
        assert f"/{run_id}/" in target
        assert Path(url2pathname(urlsplit(target).path)).is_dir()


def test_retrain_flow_validation_failure_stops_before_training_champion_untouched(prefect_api, overlay, tmp_path):
    from gpt_trader.registry.config import RegistryConfig
    from gpt_trader.registry.models import promote, register_challenger
    from gpt_trader.registry.tracking import setup_experiment
    from tests.unit.registry.test_scoring import features, log_constant

    # A champion is serving before the retrain starts.
    setup_experiment("stand-in", RegistryConfig(), tmp_path / "mlflow")
    client = _client(tmp_path)
    version = register_challenger(client, NAMES["transformer"], log_constant(1.0, features()), {"kind": "transformer"})
    promote(client, NAMES["transformer"], version, reason="existing champion")

    state = retrain_flow(config=overlay(TINY + "validation: {max_price: 100.0}\n"), return_state=True)
    assert state.is_failed()
    assert not (tmp_path / "data" / "features").exists()
    assert not (tmp_path / "models").exists()
    assert client.get_registered_model(NAMES["transformer"]).aliases == {"champion": 1}
    assert [str(v.version) for v in client.search_model_versions(f"name = '{NAMES['transformer']}'")] == ["1"]
    assert not client.search_registered_models(f"name = '{NAMES['ppo']}'")
