"""The MLflow pyfunc flavour of a trained `TransformerTrader`: feature rows in, Buy/Hold/Sell rows out.

It speaks GPT-Trader's common model interface (shared with the RL policies): a features frame in, one row per
(ts, symbol) out with a `position` target in [-1, 1]. Here the position is the sign of the predicted class
(Buy = +1, Hold = 0, Sell = -1), deliberately not scaled by confidence: the walk-forward evaluation scores the
same signal, so registry scores and research figures agree.
"""

from __future__ import annotations

from typing import Any

from mlflow.pyfunc import PythonModel

# Target exposure of each predicted class.
POSITIONS = {"Buy": 1.0, "Hold": 0.0, "Sell": -1.0}


class TransformerPyfunc(PythonModel):
    """Loads the saved trader directory (artifact `trader`) and predicts on a pandas feature frame."""

    def load_context(self, context: Any) -> None:
        """Load the trader once per process."""
        from gpt_trader.ml.transformer.trader import TransformerTrader

        self.trader = TransformerTrader.load(context.artifacts["trader"])

    # Deliberately unannotated: MLflow reads type hints as a schema; the logged signature is the schema.
    def predict(self, context, model_input, params=None):
        """One row per (ts, symbol) with a complete window: prediction, p_sell, p_hold, p_buy, expected_return,
        position."""
        import polars as pl

        out = self.trader.predict(model_input)["frame"]
        position = pl.col("prediction").replace_strict(POSITIONS, return_dtype=pl.Float64).alias("position")
        return out.with_columns(out["ts"].dt.replace_time_zone(None), position).to_pandas()
