"""Prefect events that monitoring emits; deployment triggers and automations react to them.

Event names follow `gpt_trader.<noun>.<past>`. Resource ids:

- `gpt_trader.dataset.<source>.<name>`: a dataset, from its key `<source>/<symbol>_<timeframe>` with `/` -> `.`
  (`bundled/SPX_1d` -> `gpt_trader.dataset.bundled.SPX_1d`), so `gpt_trader.dataset.*` matches every dataset
  and `gpt_trader.dataset.bundled.*` one source. The original key is in the payload as `dataset`.
- `gpt_trader.model.<name>`: a registered model, for checks made on behalf of a model (e.g. `transformer`).

`prefect` is imported inside the functions: this module is the one place outside `flows/` and scaling's actuator
that talks to Prefect, and importing `gpt_trader.monitoring` must stay light.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpt_trader.monitoring.drift import DriftResult

DRIFT_DETECTED = "gpt_trader.drift.detected"
DATASET_RESOURCE_PREFIX = "gpt_trader.dataset."
MODEL_RESOURCE_PREFIX = "gpt_trader.model."


def dataset_resource_id(key: str) -> str:
    """`gpt_trader.dataset.<source>.<name>` for a dataset key `<source>/<name>`."""
    parts = [p for p in key.split("/") if p]
    if not parts:
        raise ValueError(f"empty dataset key {key!r}")
    return DATASET_RESOURCE_PREFIX + ".".join(parts)


def resource_id(model_or_dataset: str) -> str:
    """Resource id for a dataset key (`bundled/SPX_1d`) or a model (`model:transformer`)."""
    if model_or_dataset.startswith("model:"):
        name = model_or_dataset.removeprefix("model:")
        if not name:
            raise ValueError(f"empty model name in {model_or_dataset!r}")
        return MODEL_RESOURCE_PREFIX + name
    return dataset_resource_id(model_or_dataset)


def drift_payload(model_or_dataset: str, result: DriftResult, report_path: str | Path | None = None) -> dict[str, Any]:
    """The event payload: what drifted, by how much, over which windows, and where the report is.

    `dataset` is the key exactly as the flows take it, so a trigger can template it straight into the retrain
    deployment's parameters (`{{ event.payload.dataset }}`).
    """
    return {
        "dataset": model_or_dataset,
        "share_drifted": result.share_drifted,
        "drift_share_threshold": result.drift_share_threshold,
        "drifted_columns": result.drifted_columns,
        "n_columns": len(result.columns),
        "report_path": None if report_path is None else str(report_path),
        "reference": result.reference.to_dict(),
        "current": result.current.to_dict(),
    }


def emit_drift_detected(
    model_or_dataset: str, result: DriftResult, *, report_path: str | Path | None = None
) -> str | None:
    """Emit `gpt_trader.drift.detected` for a drifted result; return the event id (None when events are off).

    Refuses a result without drift: this event starts retraining, so a wrong call must fail, not retrain.
    """
    if not result.drift_detected:
        raise ValueError(
            f"{model_or_dataset}: share of drifted columns {result.share_drifted:.3f} is below the threshold "
            f"{result.drift_share_threshold:.3f}; not emitting {DRIFT_DETECTED}"
        )
    from prefect.events import emit_event

    event = emit_event(
        event=DRIFT_DETECTED,
        resource={"prefect.resource.id": resource_id(model_or_dataset), "prefect.resource.name": model_or_dataset},
        payload=drift_payload(model_or_dataset, result, report_path),
    )
    # emit_event returns None when no events client is configured (e.g. events disabled); nothing was sent then.
    return None if event is None else str(event.id)


__all__ = [
    "DATASET_RESOURCE_PREFIX",
    "DRIFT_DETECTED",
    "MODEL_RESOURCE_PREFIX",
    "dataset_resource_id",
    "drift_payload",
    "emit_drift_detected",
    "resource_id",
]
