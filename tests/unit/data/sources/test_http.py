"""The shared JSON client against a real loopback server: retries, Retry-After, fail-fast 4xx, redaction."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr

from gpt_trader.data.sources.http import JsonHttpClient, ProviderHTTPError, parse_retry_after, redact_url
from tests.support.provider_server import ProviderServer

SECRET = "hdr-secret-Kq9-never-log-me"
KLINES = "/api/v3/klines"
PARAMS: dict[str, str | int] = {"symbol": "BTCUSDT", "interval": "1h", "limit": 2}


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as running:
        assert urlsplit(running.url).hostname == "127.0.0.1"
        yield running


class RecordingSleep:
    """Stands in for time.sleep: records the requested waits instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, secs: float) -> None:
        self.calls.append(secs)


def make_client(server: ProviderServer, sleep: RecordingSleep, **overrides: object) -> JsonHttpClient:
    config = server.provider_config(**overrides)
    return JsonHttpClient.from_config(
        "binance", server.url, config, headers={"X-Test-Secret": SecretStr(SECRET)}, sleep=sleep
    )


def test_redact_url_hides_api_key_values() -> None:
    url = "https://api.polygon.io/v2/aggs/ticker/AAPL/range/1/day/1/2?cursor=abc&apiKey=s3cr3t&limit=5"
    shown = redact_url(url)
    assert "s3cr3t" not in shown
    assert "apiKey=***" in shown
    assert "cursor=abc" in shown
    assert shown.startswith("https://api.polygon.io/v2/aggs/ticker/AAPL/range/1/day/1/2?")


def test_redact_url_without_query_is_unchanged() -> None:
    assert redact_url("http://127.0.0.1:1/v2/stocks/AAPL/bars") == "http://127.0.0.1:1/v2/stocks/AAPL/bars"


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), (" 0 ", 0.0), ("1.5", 1.5), ("-3", 0.0), (None, None), ("", None), ("soon", None)],
)
def test_parse_retry_after_seconds_and_bad_values(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date_counts_from_now() -> None:
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Mon, 01 Jan 2024 12:00:30 GMT", now=now) == 30.0


def test_get_json_success_returns_decoded_body(server: ProviderServer) -> None:
    sleep = RecordingSleep()
    with make_client(server, sleep) as client:
        rows = client.get_json(KLINES, PARAMS)
    assert len(rows) == 2
    assert rows[0][0] == 1704067200000
    assert sleep.calls == []
    (request,) = server.requests
    assert request.headers["X-Test-Secret"] == SECRET  # materialised on the wire, nowhere else


def test_get_json_429_honours_retry_after_then_succeeds(server: ProviderServer) -> None:
    server.fail(1, 429, retry_after=7)
    sleep = RecordingSleep()
    with make_client(server, sleep) as client:
        rows = client.get_json(KLINES, PARAMS)
    assert len(rows) == 2
    assert sleep.calls == [7.0]
    assert len(server.requests) == 2


def test_get_json_429_without_retry_after_uses_backoff(server: ProviderServer) -> None:
    server.fail(2, 429)
    sleep = RecordingSleep()
    with make_client(server, sleep, backoff_base_secs=0.001, backoff_max_secs=0.01) as client:
        client.get_json(KLINES, PARAMS)
    assert len(sleep.calls) == 2
    assert all(0 < s <= 0.01 for s in sleep.calls)


def test_get_json_5xx_backs_off_exponentially_then_succeeds(server: ProviderServer) -> None:
    server.fail(3, 503)
    sleep = RecordingSleep()
    with make_client(server, sleep, max_retries=3, backoff_base_secs=0.001, backoff_max_secs=1.0) as client:
        rows = client.get_json(KLINES, PARAMS)
    assert len(rows) == 2
    assert len(server.requests) == 4
    # initial * 2**n plus jitter in [0, initial): 0.001..0.002, 0.002..0.003, 0.004..0.005
    for n, wait in enumerate(sleep.calls):
        assert 0.001 * 2**n <= wait <= 0.001 * 2**n + 0.001


def test_get_json_exhausted_retries_raise_with_status_and_body(server: ProviderServer) -> None:
    server.fail(10, 500)
    sleep = RecordingSleep()
    with make_client(server, sleep, max_retries=2) as client, pytest.raises(ProviderHTTPError) as info:
        client.get_json(KLINES, PARAMS)
    error = info.value
    assert error.status == 500
    assert error.provider == "binance"
    assert len(server.requests) == 3
    message = str(error)
    assert "after 3 attempt(s)" in message
    assert "HTTP 500" in message
    assert "/api/v3/klines?symbol=BTCUSDT" in message
    assert "Internal error; unable to process your request" in message


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_get_json_4xx_fails_immediately_without_retry(server: ProviderServer, status: int) -> None:
    sleep = RecordingSleep()
    server.fail(1, status)
    with make_client(server, sleep) as client, pytest.raises(ProviderHTTPError) as info:
        client.get_json(KLINES, PARAMS)
    assert info.value.status == status
    assert len(server.requests) == 1
    assert sleep.calls == []


def test_get_json_418_ban_longer_than_max_fails_at_once(server: ProviderServer) -> None:
    server.fail(1, 418, retry_after=7200)
    sleep = RecordingSleep()
    with make_client(server, sleep, max_retry_after_secs=60) as client, pytest.raises(ProviderHTTPError) as info:
        client.get_json(KLINES, PARAMS)
    assert info.value.status == 418
    assert "7200" in str(info.value)
    assert "IP banned" in str(info.value)
    assert len(server.requests) == 1
    assert sleep.calls == []


def test_get_json_connect_error_retries_then_raises() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleep = RecordingSleep()
    client = JsonHttpClient(
        "alpaca", f"http://127.0.0.1:{port}", max_retries=2, backoff_base_secs=0.001, backoff_max_secs=0.01, sleep=sleep
    )
    with client, pytest.raises(ProviderHTTPError) as info:
        client.get_json("/v2/stocks/AAPL/bars", {"timeframe": "1Day"})
    assert info.value.status is None
    assert "ConnectError" in str(info.value)
    assert "after 3 attempt(s)" in str(info.value)
    assert len(sleep.calls) == 2


def test_get_json_read_timeout_retries_then_succeeds(server: ProviderServer) -> None:
    server.delay(1, 0.5)
    sleep = RecordingSleep()
    with make_client(server, sleep, timeout_secs=0.1) as client:
        rows = client.get_json(KLINES, PARAMS)
    assert len(rows) == 2
    assert len(sleep.calls) == 1
    assert len(server.requests) == 2


def test_get_json_secrets_never_in_errors_or_logs(server: ProviderServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server.fail(10, 503)
    sleep = RecordingSleep()
    client = make_client(server, sleep, max_retries=2)
    with client, pytest.raises(ProviderHTTPError) as info:
        client.get_json(KLINES, {**PARAMS, "apiKey": SECRET})
    assert "retry 1/2" in caplog.text  # retries are logged...
    assert SECRET not in caplog.text  # ...without the secret
    assert SECRET not in str(info.value)
    assert "apiKey=***" in str(info.value)
    assert SECRET not in repr(client)
