"""Credentials come only from the environment, as SecretStr, and never show in a repr or error."""

from __future__ import annotations

import pytest

from gpt_trader.core.errors import SourceError
from gpt_trader.data.config import DataConfig, ProviderConfig
from gpt_trader.data.sources import build_source
from gpt_trader.data.sources.alpaca import AlpacaSource
from gpt_trader.data.sources.binance import BinanceSource
from gpt_trader.data.sources.credentials import (
    read_alpaca_credentials,
    read_binance_key,
    read_polygon_key,
)
from gpt_trader.data.sources.polygon import PolygonSource

ALPACA_ENV = {"APCA_API_KEY_ID": "PKID-visible-42", "APCA_API_SECRET_KEY": "sekret-Alp-99"}
ALL_ENV_NAMES = ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "POLYGON_API_KEY", "BINANCE_API_KEY")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ALL_ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def test_read_alpaca_credentials_present_values_are_secret() -> None:
    creds = read_alpaca_credentials(ALPACA_ENV)
    assert creds.key_id.get_secret_value() == "PKID-visible-42"
    assert creds.secret_key.get_secret_value() == "sekret-Alp-99"
    for text in (repr(creds), str(creds), str(creds.model_dump())):
        assert "sekret-Alp-99" not in text
        assert "PKID-visible-42" not in text


@pytest.mark.parametrize(
    ("environ", "named", "not_named"),
    [
        ({}, ["APCA_API_KEY_ID", "APCA_API_SECRET_KEY"], []),
        ({"APCA_API_KEY_ID": "x"}, ["APCA_API_SECRET_KEY"], ["APCA_API_KEY_ID"]),
        ({"APCA_API_KEY_ID": "x", "APCA_API_SECRET_KEY": "   "}, ["APCA_API_SECRET_KEY"], ["APCA_API_KEY_ID"]),
    ],
)
def test_read_alpaca_credentials_missing_names_the_variables(
    environ: dict[str, str], named: list[str], not_named: list[str]
) -> None:
    with pytest.raises(SourceError) as info:
        read_alpaca_credentials(environ)
    message = str(info.value)
    assert all(name in message for name in named)
    assert all(name not in message for name in not_named)


def test_read_polygon_key_missing_names_the_variable() -> None:
    with pytest.raises(SourceError, match="POLYGON_API_KEY"):
        read_polygon_key({})


def test_read_binance_key_missing_is_none() -> None:
    assert read_binance_key({}) is None
    key = read_binance_key({"BINANCE_API_KEY": "bn-key-77"})
    assert key is not None
    assert key.get_secret_value() == "bn-key-77"


def test_read_credentials_default_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYGON_API_KEY", "poly-from-env-5")
    assert read_polygon_key().get_secret_value() == "poly-from-env-5"


def test_sources_from_env_repr_never_shows_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**ALPACA_ENV, "POLYGON_API_KEY": "poly-sek-3", "BINANCE_API_KEY": "bin-sek-4"}.items():
        monkeypatch.setenv(name, value)
    config = ProviderConfig()
    sources = [AlpacaSource.from_env(config), PolygonSource.from_env(config), BinanceSource.from_env(config)]
    for source in sources:
        text = repr(source) + str(source) + repr(vars(source))
        for secret in ("sekret-Alp-99", "PKID-visible-42", "poly-sek-3", "bin-sek-4"):
            assert secret not in text


@pytest.mark.parametrize(("name", "variable"), [("alpaca", "APCA_API_KEY_ID"), ("polygon", "POLYGON_API_KEY")])
def test_build_source_without_keys_names_the_variable(name: str, variable: str) -> None:
    with pytest.raises(SourceError, match=variable):
        build_source(name, DataConfig())  # type: ignore[arg-type]


def test_build_source_binance_needs_no_key() -> None:
    source = build_source("binance", DataConfig())
    assert source.name == "binance"
