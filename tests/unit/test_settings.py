from __future__ import annotations

from pathlib import Path

import pytest

from gpt_trader.core.errors import ConfigError
from gpt_trader.ml import RLConfig, TransformerConfig
from gpt_trader.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_settings_bare_seed_defaults():
    assert TransformerConfig().model_dump()["d_model"] == 512
    assert (TransformerConfig().n_heads, TransformerConfig().n_layers) == (8, 6)
    assert RLConfig().algorithm == "ppo"
    assert Settings().scaling.max_workers == 20


def test_load_settings_repo_files_layer_in_order(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("GPT_TRADER_CONFIG", raising=False)
    local = load_settings()
    assert local.ml.transformer.d_model == 64  # params.yaml
    assert local.layers == ("params.yaml", "config/default.yaml")
    prod = load_settings("config/production.yaml")
    assert prod.ml.transformer.d_model == 512  # overlay beats params
    assert prod.realtime.bus == "redis"
    assert [s.type for s in prod.realtime.sources] == ["alpaca", "polygon"]
    assert prod.monitoring.alert_cooldown_secs == 300
    assert prod.scaling.cost_limit_usd_per_hour == 100


def test_load_settings_env_overrides_yaml(tmp_path, monkeypatch):
    params = write(tmp_path / "params.yaml", "features: {rsi_window: 10}\n")
    overlay = write(tmp_path / "o.yaml", "features: {rsi_window: 12}\n")
    monkeypatch.setenv("GPT_TRADER_FEATURES__RSI_WINDOW", "21")
    assert load_settings(overlay, params=params).features.rsi_window == 21
    monkeypatch.delenv("GPT_TRADER_FEATURES__RSI_WINDOW")
    assert load_settings(overlay, params=params).features.rsi_window == 12


def test_load_settings_overlay_from_env_variable(tmp_path, monkeypatch):
    overlay = write(tmp_path / "o.yaml", "scaling: {max_workers: 7}\n")
    monkeypatch.setenv("GPT_TRADER_CONFIG", str(overlay))
    assert load_settings(params=None).scaling.max_workers == 7


def test_load_settings_unknown_key_named_with_suggestion(tmp_path):
    overlay = write(tmp_path / "o.yaml", "monitoring: {alert_cooldwn: 300}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(overlay, params=None)
    assert "monitoring.alert_cooldwn: unknown key; did you mean 'alert_cooldown_secs'?" in str(err.value)
    assert str(overlay) in str(err.value)
    overlay = write(tmp_path / "o.yaml", "scaling: {cost_limt: 100}\n")
    with pytest.raises(ConfigError, match=r"scaling\.cost_limt: unknown key; did you mean 'cost_limit_usd_per_hour'"):
        load_settings(overlay, params=None)


# The seed's (phase3-summary.md) monitoring and scaling blocks, verbatim: its key names are aliases of ours.
SEED_SECTIONS = """
monitoring:
  retention_hours: 168  # 1 week
  alert_cooldown: 300   # 5 minutes

scaling:
  min_workers: 2
  max_workers: 20
  cost_limit: 100  # $/hour
"""


def test_load_settings_seed_key_names_in_overlay_accepted(tmp_path):
    overlay = write(tmp_path / "o.yaml", SEED_SECTIONS.replace("300", "240").replace("100", "75"))
    settings = load_settings(overlay, params=None)
    assert settings.monitoring.alert_cooldown_secs == 240
    assert settings.scaling.cost_limit_usd_per_hour == 75.0
    # The canonical names are what the resolved config shows (`gpt-trader config show`).
    dumped = settings.model_dump()
    assert dumped["monitoring"]["alert_cooldown_secs"] == 240
    assert "alert_cooldown" not in dumped["monitoring"]
    assert dumped["scaling"]["cost_limit_usd_per_hour"] == 75.0
    assert "cost_limit" not in dumped["scaling"]


def test_load_settings_seed_key_names_in_params_and_env_accepted(tmp_path, monkeypatch):
    params = write(tmp_path / "params.yaml", "monitoring: {alert_cooldown: 60}\nscaling: {cost_limit: 40}\n")
    overlay = write(tmp_path / "o.yaml", "{}\n")
    settings = load_settings(overlay, params=params)
    assert (settings.monitoring.alert_cooldown_secs, settings.scaling.cost_limit_usd_per_hour) == (60, 40.0)
    # The environment, under the same seed name, beats params.yaml.
    monkeypatch.setenv("GPT_TRADER_MONITORING__ALERT_COOLDOWN", "15")
    monkeypatch.setenv("GPT_TRADER_SCALING__COST_LIMIT", "25.5")
    settings = load_settings(overlay, params=params)
    assert (settings.monitoring.alert_cooldown_secs, settings.scaling.cost_limit_usd_per_hour) == (15, 25.5)


def test_load_settings_seed_alias_and_canonical_name_both_set(tmp_path, monkeypatch):
    overlay = write(tmp_path / "o.yaml", SEED_SECTIONS)
    # The same value under both names (here a string from the environment) is one setting, not a conflict.
    monkeypatch.setenv("GPT_TRADER_SCALING__COST_LIMIT_USD_PER_HOUR", "100")
    assert load_settings(overlay, params=None).scaling.cost_limit_usd_per_hour == 100.0
    # Different values cannot be ranked once the layers are merged: refused, naming both keys.
    monkeypatch.setenv("GPT_TRADER_MONITORING__ALERT_COOLDOWN_SECS", "30")
    with pytest.raises(ConfigError) as err:
        load_settings(overlay, params=None)
    message = str(err.value)
    assert "monitoring: " in message
    assert "'alert_cooldown_secs' ('30') and its seed alias 'alert_cooldown' (300) are both set" in message
    assert "scaling" not in message


def test_load_settings_wrong_type_names_key_and_value(tmp_path):
    overlay = write(tmp_path / "o.yaml", "data:\n  datasets:\n    - {source: bundled, symbol: SPX, timeframe: 1x}\n")
    with pytest.raises(ConfigError, match=r"data\.datasets\.0\.timeframe: .*invalid timeframe '1x'"):
        load_settings(overlay, params=None)
    overlay = write(tmp_path / "o.yaml", "scaling: {max_workers: lots}\n")
    with pytest.raises(ConfigError, match=r"scaling\.max_workers: .*integer.*'lots'"):
        load_settings(overlay, params=None)


def test_load_settings_unknown_section_in_environment_refused(tmp_path, monkeypatch):
    overlay = write(tmp_path / "o.yaml", "{}\n")
    monkeypatch.setenv("GPT_TRADER_SCALNG__MAX_WORKERS", "3")
    with pytest.raises(ConfigError, match="GPT_TRADER_SCALNG__MAX_WORKERS"):
        load_settings(overlay, params=None)


def test_load_settings_unknown_nested_env_key_refused(tmp_path, monkeypatch):
    overlay = write(tmp_path / "o.yaml", "{}\n")
    monkeypatch.setenv("GPT_TRADER_SCALING__MAX_WORKRS", "3")
    with pytest.raises(ConfigError, match=r"scaling\.max_workrs: unknown key; did you mean 'max_workers'"):
        load_settings(overlay, params=None)


def test_load_settings_missing_overlay_is_error(tmp_path):
    with pytest.raises(ConfigError, match=r"config overlay .*missing\.yaml not found"):
        load_settings(tmp_path / "missing.yaml", params=None)


def test_load_settings_non_mapping_yaml_is_error(tmp_path):
    overlay = write(tmp_path / "o.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_settings(overlay, params=None)


def test_load_settings_invariants_checked(tmp_path):
    overlay = write(tmp_path / "o.yaml", "scaling: {min_workers: 5, max_workers: 2}\n")
    with pytest.raises(ConfigError, match="min_workers"):
        load_settings(overlay, params=None)
    overlay = write(
        tmp_path / "o.yaml",
        "data:\n  datasets:\n    - {source: bundled, symbol: SPX}\n    - {source: bundled, symbol: SPX}\n",
    )
    with pytest.raises(ConfigError, match="listed twice"):
        load_settings(overlay, params=None)


def test_settings_frozen():
    settings = Settings()
    with pytest.raises(Exception, match="frozen"):
        settings.scaling.max_workers = 3  # type: ignore[misc]


def test_load_settings_reserved_variables_are_not_sections(tmp_path, monkeypatch):
    overlay = write(tmp_path / "o.yaml", "{}\n")
    monkeypatch.setenv("GPT_TRADER_HOME", str(tmp_path))  # exported by the Makefile for prefect.yaml
    assert load_settings(overlay, params=None).layers == (str(overlay),)
