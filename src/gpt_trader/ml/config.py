"""The `ml` config section: the transformer and reinforcement-learning subsections.

Bare constructors give the seed's (GPU-sized) defaults; `params.yaml` holds the small local configuration.
"""

from __future__ import annotations

from gpt_trader.config_base import Section
from gpt_trader.ml.rl.config import RLConfig
from gpt_trader.ml.transformer.config import TransformerConfig

__all__ = ["MLConfig", "RLConfig", "TransformerConfig"]


class MLConfig(Section):
    """Model sections, keyed as in the seed's `config/production.yaml`."""

    transformer: TransformerConfig = TransformerConfig()
    reinforcement: RLConfig = RLConfig()
