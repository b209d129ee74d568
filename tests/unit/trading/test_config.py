from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from gpt_trader.trading.config import LiveConfig, TradingConfig


def test_live_config_condition_states_default_reduces_in_an_extreme_market():
    assert LiveConfig().condition_states == {"EXTREME": "REDUCING"}
    assert LiveConfig().stale_action == "flat"
    assert LiveConfig().rl_model == "ppo"


def test_live_config_condition_states_accepts_condition_labels_in_either_case():
    live = LiveConfig(condition_states={"extreme": "HALTED", "VOLATILE": "REDUCING"})
    assert live.condition_states == {"EXTREME": "HALTED", "VOLATILE": "REDUCING"}


@pytest.mark.parametrize(
    ("states", "message"),
    [
        ({"PANIC": "HALTED"}, "unknown market condition(s) ['PANIC']"),
        ({"EXTREME": "halted"}, "EXTREME"),  # states are TradingState names
        ({"extreme": "HALTED", "EXTREME": "REDUCING"}, "names a condition twice"),
    ],
)
def test_live_config_condition_states_refuses_unknown_names(states, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        TradingConfig.model_validate({"live": {"condition_states": states}})


@pytest.mark.parametrize(("key", "value"), [("stale_action", "close"), ("rl_model", "a2c")])
def test_live_config_refuses_unknown_choices(key, value):
    with pytest.raises(ValidationError):
        LiveConfig.model_validate({key: value})
