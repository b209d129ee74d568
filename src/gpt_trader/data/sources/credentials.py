"""Provider API keys: read from the environment only, held as `SecretStr` so no log or repr shows them."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, SecretStr

from gpt_trader.core.errors import SourceError

# Alpaca's own SDKs read these names, so one export serves both.
ALPACA_KEY_ID_ENV = "APCA_API_KEY_ID"
ALPACA_SECRET_KEY_ENV = "APCA_API_SECRET_KEY"
POLYGON_API_KEY_ENV = "POLYGON_API_KEY"
BINANCE_API_KEY_ENV = "BINANCE_API_KEY"


class AlpacaCredentials(BaseModel):
    """Alpaca key pair, sent as the APCA-API-KEY-ID / APCA-API-SECRET-KEY headers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: SecretStr
    secret_key: SecretStr


def _read(environ: Mapping[str, str] | None, name: str) -> SecretStr | None:
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return SecretStr(value) if value else None


def read_alpaca_credentials(environ: Mapping[str, str] | None = None) -> AlpacaCredentials:
    """Read the Alpaca key pair; a missing or empty variable raises `SourceError` naming it."""
    key_id = _read(environ, ALPACA_KEY_ID_ENV)
    secret_key = _read(environ, ALPACA_SECRET_KEY_ENV)
    missing = [n for n, v in ((ALPACA_KEY_ID_ENV, key_id), (ALPACA_SECRET_KEY_ENV, secret_key)) if v is None]
    if key_id is None or secret_key is None:
        raise SourceError(
            f"alpaca: missing credentials; set {' and '.join(missing)} in the environment "
            "(keys from the Alpaca dashboard; a paper account's keys serve market data)"
        )
    return AlpacaCredentials(key_id=key_id, secret_key=secret_key)


def read_polygon_key(environ: Mapping[str, str] | None = None) -> SecretStr:
    """Read the Polygon API key; missing raises `SourceError` naming the variable."""
    key = _read(environ, POLYGON_API_KEY_ENV)
    if key is None:
        raise SourceError(f"polygon: missing credentials; set {POLYGON_API_KEY_ENV} in the environment")
    return key


def read_binance_key(environ: Mapping[str, str] | None = None) -> SecretStr | None:
    """Read the optional Binance API key (klines are public, so None is fine)."""
    return _read(environ, BINANCE_API_KEY_ENV)
