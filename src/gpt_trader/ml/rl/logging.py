"""SB3 logger output format that sends every numeric value SB3 records to the active MLflow run."""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.logger import KVWriter, Logger


class MLflowOutputFormat(KVWriter):
    """Writes SB3's key/values (`rollout/ep_rew_mean`, `train/loss`, ...) as MLflow metrics (`/` -> `_`)."""

    def __init__(self, run_id: str | None = None) -> None:
        # Writing to an explicit run id keeps metrics in the right run even if another run becomes active.
        self.run_id = run_id

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        """Log the numeric entries at `step` (SB3 passes num_timesteps)."""
        import mlflow

        metrics = {
            key.replace("/", "_"): float(value)
            for key, value in key_values.items()
            if isinstance(value, int | float | np.number) and not isinstance(value, bool) and np.isfinite(value)
        }
        if not metrics:
            return
        if self.run_id is None:
            mlflow.log_metrics(metrics, step=step)
        else:
            mlflow.MlflowClient().log_batch(
                self.run_id,
                metrics=[mlflow.entities.Metric(k, v, mlflow_timestamp(), step) for k, v in metrics.items()],
            )

    def close(self) -> None:
        """Nothing to release: MLflow owns the run."""


def mlflow_timestamp() -> int:
    """Milliseconds since the epoch, as MLflow metrics expect."""
    import time

    return int(time.time() * 1000)


def mlflow_logger(run_id: str | None = None) -> Logger:
    """An SB3 `Logger` writing only to MLflow (no stdout, no files)."""
    return Logger(folder=None, output_formats=[MLflowOutputFormat(run_id)])
