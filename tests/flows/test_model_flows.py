"""The standalone model flows (`train_rl`, `train_transformer`, `promote`) run as flows against a real Prefect API
and a real MLflow registry, on the retrain test's tiny config."""

from __future__ import annotations

import pytest

from flows.promote import promote_flow
from flows.train_rl import train_rl_flow
from gpt_trader.data.stages import capture_stage, features_stage, validate_stage
from gpt_trader.settings import load_settings
from tests.flows.test_retrain import NAMES, TINY, _artifacts, _client

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_train_rl_then_promote_flows_register_judge_and_keep_an_equal_champion(prefect_api, overlay, tmp_path):
    config = overlay(TINY)
    settings = load_settings(config)
    # The data stages are the same library calls the data flows make (tested there): run them directly.
    capture_stage(settings)
    validate_stage(settings)
    features_stage(settings)
    client = _client(tmp_path)

    trained = train_rl_flow(agent="ppo", config=config, return_state=True)
    assert trained.is_completed(), trained
    (row,) = trained.result()
    assert (row["agent"], row["version"]) == ("ppo", "1")
    tags = client.get_model_version(NAMES["ppo"], "1").tags
    assert tags["retrain.reason"] == "manual"
    assert client.get_registered_model(NAMES["ppo"]).aliases == {"challenger": 1}
    assert "| ppo | 1 |" in _artifacts(trained)["rl-training"]

    judged = promote_flow(kind="ppo", config=config, return_state=True)
    assert judged.is_completed(), judged
    (first,) = judged.result()
    assert (first["model"], first["challenger"], first["champion_before"], first["promoted"]) == (
        NAMES["ppo"],
        "1",
        None,
        True,
    )
    assert client.get_registered_model(NAMES["ppo"]).aliases == {"champion": 1}
    assert _artifacts(judged)["promotion-ppo"].startswith(f"# {NAMES['ppo']}: challenger v1 PROMOTED")

    # Same seed, data and params: v2 is the same policy. Its signature matches the champion's, but it cannot beat
    # the champion by the margin, so the champion stays.
    train_rl_flow(agent="ppo", config=config)
    (second,) = promote_flow(kind="ppo", config=config)
    assert (second["challenger"], second["champion_before"], second["promoted"]) == ("2", "1", False)
    assert any("within the" in r and "margin" in r for r in second["reasons"])
    assert not any("signature" in r for r in second["reasons"])
    assert client.get_registered_model(NAMES["ppo"]).aliases == {"champion": 1, "challenger": 2}
    assert client.get_model_version(NAMES["ppo"], "2").tags["promotion.decision"] == "rejected"
