"""Registry operations on MLflow: register a challenger, promote, roll back, list.

Serving loads only `models:/<name>@champion`. Each promotion records the version it replaced as a tag on the new
champion, so a rollback knows where to go without any state outside the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gpt_trader.core.errors import GptTraderError

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_TAG = "promotion.previous_champion"


class RegistryError(GptTraderError):
    """A registry operation is impossible (unknown model or version, nothing to roll back to)."""


class NoChallengerError(RegistryError):
    """The gate was asked to judge a model that has no `challenger` version."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"{name} has no challenger to judge: train one first (`gpt-trader train ...`)")


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One registered version as the CLI and flows show it."""

    name: str
    version: str
    aliases: tuple[str, ...]
    run_id: str | None
    created: datetime
    tags: dict[str, str]


def champion_uri(name: str) -> str:
    """The only URI serving loads a model from."""
    return f"models:/{name}@{CHAMPION}"


def register_challenger(client: MlflowClient, name: str, model_uri: str, tags: dict[str, Any]) -> str:
    """Register `model_uri` as a new version of `name`, tag it, and point the `challenger` alias at it."""
    import mlflow

    str_tags = {k: str(v) for k, v in tags.items()}
    version = mlflow.register_model(model_uri, name, tags=str_tags)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return str(version.version)


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version an alias points at, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def promote(client: MlflowClient, name: str, version: str, *, reason: str, tags: dict[str, str] | None = None) -> None:
    """Make `version` the champion, remembering the one it replaces; clears `challenger` if it pointed there."""
    _require_version(client, name, version)
    previous = alias_version(client, name, CHAMPION)
    if previous == version:
        raise RegistryError(f"{name} v{version} is already the champion")
    for key, value in {
        **(tags or {}),
        PREVIOUS_TAG: previous or "none",
        "promotion.promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "promotion.reason": reason[:5000],
    }.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, CHAMPION, version)
    if alias_version(client, name, CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)


def record_rejection(client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    """Record a rejected promotion's reasons on the challenger version; the champion stays untouched."""
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def rollback(client: MlflowClient, name: str) -> tuple[str, str]:
    """Restore the champion that the current one replaced; returns (from_version, to_version)."""
    current = alias_version(client, name, CHAMPION)
    if current is None:
        raise RegistryError(f"{name} has no champion to roll back")
    previous = client.get_model_version(name, current).tags.get(PREVIOUS_TAG, "none")
    if previous == "none":
        raise RegistryError(f"{name} v{current} was the first champion; there is nothing to roll back to")
    _require_version(client, name, previous)
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.set_model_version_tag(name, current, "promotion.rolled_back_at", datetime.now(UTC).isoformat())
    return current, previous


def list_versions(client: MlflowClient, name: str) -> list[VersionInfo]:
    """All versions of `name`, newest first, with their aliases (read from the model: search omits them)."""
    from mlflow.exceptions import MlflowException

    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException:
        raise RegistryError(f"no registered model named {name!r}") from None
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    out = []
    for mv in client.search_model_versions(f"name = '{name}'"):
        out.append(
            VersionInfo(
                name=name,
                version=str(mv.version),
                aliases=tuple(sorted(by_version.get(str(mv.version), []))),
                run_id=mv.run_id,
                created=datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC),
                tags=dict(mv.tags),
            )
        )
    return sorted(out, key=lambda v: int(v.version), reverse=True)


def _require_version(client: MlflowClient, name: str, version: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(name, version)
    except MlflowException:
        raise RegistryError(f"{name} has no version {version!r}") from None
