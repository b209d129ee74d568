"""Auto-scaling of Prefect work pools by market condition (the seed's `bot.scaling`).

`AutoScaler` is the seed's entry point; the parts are importable on their own: the classifier (`conditions`), the
forecaster (`forecast`), the pure policy (`policy`), pricing (`cost`) and the Prefect edge (`actuator`, which
imports Prefect lazily so `import gpt_trader.scaling` stays light).
"""

from gpt_trader.scaling.actuator import Actuator, PrefectActuator, RecordingActuator
from gpt_trader.scaling.autoscaler import AutoScaler
from gpt_trader.scaling.conditions import ConditionClassifier, MarketCondition, MarketConditionDetector
from gpt_trader.scaling.config import ScalingConfig
from gpt_trader.scaling.forecast import LoadForecaster
from gpt_trader.scaling.policy import ScalingDecision, decide_scaling

__all__ = [
    "Actuator",
    "AutoScaler",
    "ConditionClassifier",
    "LoadForecaster",
    "MarketCondition",
    "MarketConditionDetector",
    "PrefectActuator",
    "RecordingActuator",
    "ScalingConfig",
    "ScalingDecision",
    "decide_scaling",
]
