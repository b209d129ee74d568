"""A champion model held for serving, swapped in place when the registry's `champion` alias moves.

The swap happens between bars: `refresh()` loads and probes the new version first and only then replaces the
reference, so no bar is ever scored by a half-loaded model. A new champion that fails to load or to predict is
refused: the old one keeps serving and an alert is raised.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gpt_trader.core.clock import Clock, SystemClock

log = logging.getLogger(__name__)

Loader = Callable[[str], Any]
Probe = Callable[[Any], None]
AlertHook = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model instance with the registry version it came from and when that version was registered."""

    name: str
    version: str
    model: Any
    registered_at: datetime


class ChampionSlot:
    """Holds `models:/<name>@<alias>`; `refresh()` swaps to a newly promoted version after probing it."""

    def __init__(
        self,
        name: str,
        client: Any,
        *,
        alias: str = "champion",
        loader: Loader | None = None,
        probe: Probe | None = None,
        on_alert: AlertHook | None = None,
        max_age: timedelta | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.name, self.alias, self.client = name, alias, client
        self._loader = loader or _load_pyfunc
        self._probe = probe
        self._on_alert = on_alert or (lambda severity, message: log.warning("%s: %s", severity, message))
        self._max_age = max_age
        self._clock = clock or SystemClock()
        self._current: LoadedModel | None = None
        self._refused: set[str] = set()
        self._lock = threading.Lock()

    def set_probe(self, probe: Probe) -> None:
        """Install the check a new version must pass before it serves (e.g. a prediction on live features)."""
        self._probe = probe

    @property
    def current(self) -> LoadedModel | None:
        """The model serving now (None before the first successful load)."""
        return self._current

    def refresh(self) -> bool:
        """Check the alias; load, probe and swap in a new version. Returns True when the model changed."""
        version = self._alias_version()
        if version is None:
            if self._current is None:
                self._on_alert("WARNING", f"{self.name}: no '{self.alias}' alias in the registry yet")
            return False
        with self._lock:
            if self._current is not None and self._current.version == version:
                return False
            if version in self._refused:
                return False
            try:
                model = self._loader(f"models:/{self.name}/{version}")
                if self._probe is not None:
                    self._probe(model)
            except Exception as exc:  # any failure of a new model must leave the old one serving
                self._refused.add(version)
                keeping = f"keeping v{self._current.version}" if self._current else "no model to serve"
                self._on_alert("ERROR", f"{self.name} v{version} failed to load or predict ({exc}); {keeping}")
                return False
            registered = self.client.get_model_version(self.name, version).creation_timestamp
            self._current = LoadedModel(self.name, version, model, _from_ms(registered))
            log.info("%s: now serving v%s", self.name, version)
            return True

    def is_expired(self) -> bool:
        """Whether the serving model is older than `max_age` (or missing): its symbol should go flat."""
        if self._current is None:
            return True
        if self._max_age is None:
            return False
        return self._clock.now() - self._current.registered_at > self._max_age

    def _alias_version(self) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(self.name, self.alias).version)
        except MlflowException:
            return None


def _load_pyfunc(uri: str) -> Any:
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(uri)


def _from_ms(ms: int) -> datetime:
    from datetime import UTC

    return datetime.fromtimestamp(ms / 1000, tz=UTC)
