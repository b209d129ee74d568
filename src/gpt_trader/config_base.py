"""Base model for every config section: frozen, unknown keys refused."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError


class Section(BaseModel):
    """A frozen config section that refuses unknown keys so a typo fails at start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def fold_seed_alias(model: type[Section], data: Any, canonical: str, seed: str) -> Any:
    """Keep one of `canonical` and its seed alias `seed` when both are given with equal values, else refuse.

    The layers (params.yaml, overlay, environment) are merged before validation, so which one set which name is
    lost by now: two different values cannot be ranked, and picking either would silently drop a setting. Values
    are compared as the field's type, so an environment string "300" equals a YAML 300.
    """
    if not isinstance(data, dict) or canonical not in data or seed not in data:
        return data
    adapter: TypeAdapter[Any] = TypeAdapter(model.model_fields[canonical].annotation or Any)
    try:
        same = adapter.validate_python(data[canonical]) == adapter.validate_python(data[seed])
    except ValidationError:
        same = False
    if not same:
        raise ValueError(
            f"{canonical!r} ({data[canonical]!r}) and its seed alias {seed!r} ({data[seed]!r}) are both set, "
            f"perhaps in different layers (params.yaml, overlay, GPT_TRADER_* environment); use one name throughout"
        )
    return {k: v for k, v in data.items() if k != seed}
