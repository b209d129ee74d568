"""Errors of the trading path; each names the order, symbol or URL it concerns."""

from __future__ import annotations

from gpt_trader.core.errors import GptTraderError


class BrokerError(GptTraderError):
    """A broker call failed for good (network, HTTP status, malformed answer); `status` is None without a reply."""

    exit_code = 6

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class OrderRejectedError(BrokerError):
    """The broker refused an order (insufficient buying power, unknown symbol, ...)."""


class StateError(GptTraderError):
    """The persisted trading state is inconsistent (a fill applied twice, a bar processed out of order)."""

    exit_code = 7
