"""Machine-learning models. Heavy frameworks load only when a model is used, so importing this is cheap.

The seed's examples import from here: `from gpt_trader.ml import TransformerTrader, TransformerConfig` and
`from gpt_trader.ml import train_rl_agent, RLConfig`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from gpt_trader.ml.config import MLConfig, RLConfig, TransformerConfig

_LAZY = {
    "TransformerTrader": "gpt_trader.ml.transformer.trader",
    "train_rl_agent": "gpt_trader.ml.rl.train",
}

__all__ = ["MLConfig", "RLConfig", "TransformerConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gpt_trader.ml' has no attribute {name!r}")
