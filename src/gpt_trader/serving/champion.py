"""A champion model held for serving, swapped in place when the registry's `champion` alias moves.

The swap happens between bars: `refresh()` loads and probes the new version first and only then replaces the
reference, so no bar is ever scored by a half-loaded model. A new champion that fails to load or to predict is
refused: the old one keeps serving and an alert is raised. The version a swap replaced is kept: a new champion
that passed its probe but fails to predict later, while serving, is refused too and the previous version serves
again (`fall_back`), so one bad promotion never leaves the symbols without a model.
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
        self._previous: LoadedModel | None = None  # what the last swap replaced, to fall back to
        self._refused: set[str] = set()
        self._lock = threading.Lock()

    def set_probe(self, probe: Probe) -> None:
        """Install the check a new version must pass before it serves (e.g. a prediction on live features)."""
        self._probe = probe

    @property
    def current(self) -> LoadedModel | None:
        """The model serving now (None before the first successful load)."""
        return self._current

    @property
    def previous(self) -> LoadedModel | None:
        """The version the last swap replaced (None before a swap, or after falling back to it)."""
        return self._previous

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
            self._previous = self._current
            self._current = LoadedModel(self.name, version, model, _from_ms(registered))
            log.info("%s: now serving v%s", self.name, version)
            return True

    def fall_back(self, failed_version: str, reason: str) -> LoadedModel | None:
        """`failed_version` failed to predict while serving: refuse it (a refresh will not swap it back while the
        alias still points at it) and serve the version it replaced again. Returns the model now serving, or None
        when there is nothing to fall back to (the caller goes flat)."""
        with self._lock:
            current = self._current
            if current is None or current.version != failed_version:
                return current  # already replaced (a swap or an earlier fall-back): serve what is there now
            previous = self._previous
            if previous is None:
                return None
            self._refused.add(failed_version)
            self._current, self._previous = previous, None
        self._on_alert(
            "ERROR",
            f"{self.name} v{failed_version} failed to predict while serving ({reason}); "
            f"fell back to v{previous.version}; v{failed_version} is refused",
        )
        return previous

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
