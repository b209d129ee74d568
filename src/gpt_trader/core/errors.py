"""The project's exception hierarchy; every error names the bad value and where it came from."""

from __future__ import annotations


class GptTraderError(Exception):
    """Base class of every error GPT-Trader raises on purpose."""

    exit_code: int = 1


class ConfigError(GptTraderError):
    """Configuration is missing, malformed, or has unknown keys or wrong types."""

    exit_code = 2


class DataError(GptTraderError):
    """Market data is unusable: wrong schema, NaNs, unsorted or duplicate timestamps, corrupt file."""

    exit_code = 3


class SchemaError(DataError):
    """A frame does not match the schema expected at a boundary."""


class StoreError(DataError):
    """A stored dataset cannot be read or written safely."""


class ValidationFailedError(DataError):
    """Data failed the validation gate; downstream stages refuse it."""

    exit_code = 4


class SourceError(GptTraderError):
    """A market-data source failed (network, provider error, bad credentials, unknown symbol)."""

    exit_code = 5
