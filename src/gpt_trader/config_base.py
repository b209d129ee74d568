"""Base model for every config section: frozen, unknown keys refused."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A frozen config section that refuses unknown keys so a typo fails at start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True)
