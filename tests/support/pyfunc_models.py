"""Small deterministic MLflow pyfunc models speaking the serving format of the trained models.

Transformer format: p_sell, p_hold, p_buy, expected_return, position per row; RL format: position per row.
They let tests exercise the registry, hot swaps and the live session without minutes of training.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd


class FixedTransformer(mlflow.pyfunc.PythonModel):
    """Always the same class probabilities (e.g. a confident Buy); `broken=True` raises on predict."""

    def __init__(self, p_buy: float = 0.8, p_sell: float = 0.1, broken: bool = False) -> None:
        self.p_buy, self.p_sell, self.broken = p_buy, p_sell, broken

    def predict(self, context, model_input, params=None):
        if self.broken:
            raise RuntimeError("this model is broken")
        n = len(model_input)
        p_hold = 1.0 - self.p_buy - self.p_sell
        direction = max((self.p_sell, -1.0), (p_hold, 0.0), (self.p_buy, 1.0))[1]
        return pd.DataFrame(
            {
                "p_sell": np.full(n, self.p_sell),
                "p_hold": np.full(n, p_hold),
                "p_buy": np.full(n, self.p_buy),
                "expected_return": np.full(n, 0.001 * direction),
                "position": np.full(n, direction),
            }
        )


class AlignedOnlyTransformer(FixedTransformer):
    """A confident Buy, but like a multi-asset model it refuses a frame whose symbols end on different bars."""

    def predict(self, context, model_input, params=None):
        last = model_input.groupby("symbol")["ts"].max()
        if last.nunique() > 1:
            raise ValueError(f"symbols end on different bars: {last.to_dict()}")
        return super().predict(context, model_input, params)


class FixedPolicy(mlflow.pyfunc.PythonModel):
    """Always the same target position."""

    def __init__(self, position: float) -> None:
        self.position = position

    def predict(self, context, model_input, params=None):
        return pd.DataFrame({"position": np.full(len(model_input), self.position)})


def log_and_register(client, name: str, model: mlflow.pyfunc.PythonModel, *, champion: bool) -> str:
    """Log `model`, register it as a version of `name`, and make it champion (else leave it challenger)."""
    from gpt_trader.registry.models import promote, register_challenger

    with mlflow.start_run():
        uri = mlflow.pyfunc.log_model(name="model", python_model=model).model_uri
    version = register_challenger(client, name, uri, {})
    if champion:
        promote(client, name, version, reason="test")
    return version
