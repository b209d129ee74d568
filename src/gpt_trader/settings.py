"""One typed configuration: code defaults < params.yaml < overlay (config/*.yaml) < GPT_TRADER_* environment.

Load it once at the edge (CLI, flow, DVC stage) with `load_settings()` and pass sections down.
"""

from __future__ import annotations

import difflib
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gpt_trader.config_base import Section
from gpt_trader.core.errors import ConfigError
from gpt_trader.data.config import DataConfig, FeaturesConfig, ValidationConfig
from gpt_trader.ml.config import MLConfig
from gpt_trader.monitoring.config import MonitoringConfig
from gpt_trader.realtime.config import RealtimeConfig
from gpt_trader.registry.config import RegistryConfig
from gpt_trader.scaling.config import ScalingConfig
from gpt_trader.trading.config import CostConfig, TradingConfig

ENV_PREFIX = "GPT_TRADER_"
# Names the overlay file; it is not a settings field.
CONFIG_ENV = "GPT_TRADER_CONFIG"
# Prefixed variables that are not settings: the overlay path, and the project directory that the Makefile
# exports for prefect.yaml's `{{ $GPT_TRADER_HOME }}`.
RESERVED_ENV = frozenset({CONFIG_ENV, "GPT_TRADER_HOME"})
DEFAULT_OVERLAY = Path("config/default.yaml")
DEFAULT_PARAMS = Path("params.yaml")


class PathsConfig(Section):
    """Output roots, relative to the project directory unless absolute."""

    data: str = "data"
    models: str = "models"
    reports: str = "reports"
    mlflow: str = "mlflow"
    metrics: str = "metrics"


class Settings(BaseSettings):
    """The whole configuration; sections are keyed as in the seed's `config/production.yaml`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True)

    paths: PathsConfig = PathsConfig()
    data: DataConfig = DataConfig()
    validation: ValidationConfig = ValidationConfig()
    features: FeaturesConfig = FeaturesConfig()
    ml: MLConfig = MLConfig()
    costs: CostConfig = CostConfig()
    trading: TradingConfig = TradingConfig()
    registry: RegistryConfig = RegistryConfig()
    realtime: RealtimeConfig = RealtimeConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    scaling: ScalingConfig = ScalingConfig()
    # Which layers built this object, for error messages and run logs.
    layers: tuple[str, ...] = Field(default=(), exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the YAML layers, which arrive as init kwargs.
        return (env_settings, init_settings)


def load_settings(
    config: str | os.PathLike[str] | None = None,
    *,
    params: str | os.PathLike[str] | None = DEFAULT_PARAMS,
) -> Settings:
    """Build `Settings` from params.yaml, the overlay and the environment; raise `ConfigError` on bad keys.

    The overlay is `config` if given, else `$GPT_TRADER_CONFIG`, else `config/default.yaml`; a named overlay
    that does not exist is an error. A missing params.yaml is only tolerated when `params` is None.
    """
    env = os.environ
    _check_env_keys(env)
    merged: dict[str, Any] = {}
    layers: list[str] = []
    if params is not None:
        merged = _deep_merge(merged, _read_yaml(Path(params), what="params file"))
        layers.append(str(params))
    overlay = Path(config) if config is not None else Path(env.get(CONFIG_ENV, DEFAULT_OVERLAY))
    merged = _deep_merge(merged, _read_yaml(overlay, what="config overlay"))
    layers.append(str(overlay))
    if any(k.startswith(ENV_PREFIX) and k not in RESERVED_ENV for k in env):
        layers.append("environment")
    return _build(merged, layers)


def _build(merged: dict[str, Any], layers: list[str]) -> Settings:
    try:
        return Settings(**merged, layers=tuple(layers))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, layers)) from None


def _describe(exc: ValidationError, layers: list[str]) -> str:
    lines = [f"invalid configuration (from {', '.join(layers) or 'defaults'}):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        value = err.get("input")
        shown = "" if err["type"] == "missing" or isinstance(value, dict) else f" (got {value!r})"
        message = _unknown_key_hint(err["loc"]) if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"  {key}: {message}{shown}")
    return "\n".join(lines)


def _unknown_key_hint(loc: tuple[int | str, ...]) -> str:
    """Say which keys the enclosing section accepts, suggesting the closest one."""
    model: Any = Settings
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return "unknown key"
        model = field.annotation
        while typing.get_args(model) and not hasattr(model, "model_fields"):
            model = next((a for a in typing.get_args(model) if hasattr(a, "model_fields")), typing.get_args(model)[0])
    allowed = sorted(getattr(model, "model_fields", {}))
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key{hint} (allowed: {', '.join(allowed)})"


def _check_env_keys(env: Mapping[str, str]) -> None:
    sections = set(Settings.model_fields) - {"layers"}
    for name in env:
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV:
            continue
        head = name[len(ENV_PREFIX) :].split("__", 1)[0].lower()
        if head not in sections:
            raise ConfigError(
                f"unknown environment variable {name}: no config section {head!r} (have {sorted(sections)})"
            )


def _read_yaml(path: Path, *, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{what} {path} not found (working directory {Path.cwd()})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out
