"""The JSON-over-HTTP GET client the REST history sources share: httpx for transport, tenacity for retries.

Transient failures (connect errors, timeouts, 5xx) back off exponentially with jitter; 429 and Binance's 418
honour `Retry-After` in seconds. Other 4xx fail at once. Every failure surfaces as `ProviderHTTPError`
naming the provider, the (redacted) URL, the status and an excerpt of the body; secrets never appear in it.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import orjson
from pydantic import SecretStr
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from gpt_trader.core.errors import SourceError
from gpt_trader.data.config import ProviderConfig

log = logging.getLogger(__name__)

# Query parameters whose values are credentials (Polygon's `apiKey` among them); compared case-insensitively.
SECRET_QUERY_PARAMS = frozenset({"apikey", "api_key", "key", "token", "access_token", "secret", "signature"})
RATE_LIMIT_STATUSES = frozenset({429, 418})
BODY_EXCERPT_CHARS = 300

QueryParams = Mapping[str, str | int | float]


class ProviderHTTPError(SourceError):
    """A provider request failed for good; `status` is None when no response came back."""

    def __init__(self, message: str, *, provider: str, url: str, status: int | None) -> None:
        super().__init__(message)
        self.provider = provider
        self.url = url
        self.status = status


class _RetryableStatus(Exception):
    """A response worth retrying (5xx, 429, 418); carries what the final error needs."""

    def __init__(self, response: httpx.Response, retry_after_secs: float | None) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response
        self.retry_after_secs = retry_after_secs


def redact_url(url: str) -> str:
    """The URL with credential-like query values replaced by `***`."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [
        (k, "***" if k.lower() in SECRET_QUERY_PARAMS else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="/:*,")))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date; None when absent or bad."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class _RedactUrlFilter(logging.Filter):
    """Redacts credential query values from the request URL httpx logs at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(redact_url(str(a)) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


_HTTPX_URL_FILTER = _RedactUrlFilter()


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, _RetryableStatus | httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError)


class JsonHttpClient:
    """GETs JSON from one provider with bounded retries; use as a context manager to close its connections."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        timeout_secs: float = 30.0,
        max_retries: int = 5,
        backoff_base_secs: float = 0.5,
        backoff_max_secs: float = 30.0,
        max_retry_after_secs: float = 120.0,
        headers: Mapping[str, str | SecretStr] | None = None,
        auth_hint: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.max_retry_after_secs = max_retry_after_secs
        self.auth_hint = auth_hint
        self._headers = dict(headers or {})
        self._sleep = sleep
        self._backoff = wait_exponential_jitter(
            multiplier=backoff_base_secs, max=backoff_max_secs, jitter=backoff_base_secs
        )
        # Defence in depth: our adapters keep keys out of URLs, but a caller's query might not.
        logging.getLogger("httpx").addFilter(_HTTPX_URL_FILTER)
        self._client = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(timeout_secs))

    @classmethod
    def from_config(
        cls,
        provider: str,
        base_url: str,
        config: ProviderConfig,
        *,
        headers: Mapping[str, str | SecretStr] | None = None,
        auth_hint: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> JsonHttpClient:
        """Build a client with the timeouts and retry policy of `config`."""
        return cls(
            provider,
            base_url,
            timeout_secs=config.timeout_secs,
            max_retries=config.max_retries,
            backoff_base_secs=config.backoff_base_secs,
            backoff_max_secs=config.backoff_max_secs,
            max_retry_after_secs=config.max_retry_after_secs,
            headers=headers,
            auth_hint=auth_hint,
            sleep=sleep,
        )

    def __repr__(self) -> str:
        return f"JsonHttpClient(provider={self.provider!r}, base_url={self.base_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections."""
        self._client.close()

    def get_json(self, url: str, params: QueryParams | None = None) -> Any:
        """GET `url` (a path under `base_url`, or an absolute URL) and return the decoded JSON body."""
        request = self._client.build_request("GET", url, params=dict(params) if params else None)
        shown = self._scrub(redact_url(str(request.url)))
        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(_is_transient),
            sleep=self._sleep,
            before_sleep=lambda state: self._log_retry(state, shown),
            reraise=True,
        )
        try:
            response = retrying(self._send, request, shown)
        except _RetryableStatus as exc:
            raise self._status_error(exc.response, shown, attempts=self._attempts(retrying)) from None
        except httpx.HTTPError as exc:
            raise ProviderHTTPError(
                f"{self.provider}: GET {shown} failed after {self._attempts(retrying)} attempt(s): "
                f"{type(exc).__name__}: {self._scrub(str(exc)) or 'no detail'}",
                provider=self.provider,
                url=shown,
                status=None,
            ) from None
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise ProviderHTTPError(
                f"{self.provider}: GET {shown} returned HTTP {response.status_code} "
                f"with a body that is not JSON: {self._excerpt(response)!r}",
                provider=self.provider,
                url=shown,
                status=response.status_code,
            ) from None

    def _send(self, request: httpx.Request, shown: str) -> httpx.Response:
        # Secret headers are materialised per request so the client object never holds a plain secret.
        for name, value in self._headers.items():
            request.headers[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
        response = self._client.send(request)
        status = response.status_code
        if status < 400:
            return response
        if status in RATE_LIMIT_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is not None and retry_after > self.max_retry_after_secs:
                raise self._status_error(
                    response,
                    shown,
                    attempts=None,
                    note=f"asked to wait {retry_after:.0f}s (Retry-After), "
                    f"more than max_retry_after_secs={self.max_retry_after_secs:g}",
                )
            raise _RetryableStatus(response, retry_after)
        if status >= 500:
            raise _RetryableStatus(response, None)
        raise self._status_error(response, shown, attempts=None)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _RetryableStatus) and exc.retry_after_secs is not None:
            return exc.retry_after_secs
        return float(self._backoff(state))

    def _log_retry(self, state: RetryCallState, shown: str) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "%s: GET %s failed (%s), retry %d/%d in %.2fs",
            self.provider,
            shown,
            self._scrub(str(exc)),
            state.attempt_number,
            self.max_retries,
            wait,
        )

    @staticmethod
    def _attempts(retrying: Retrying) -> int:
        return int(retrying.statistics.get("attempt_number", 1))

    def _status_error(
        self, response: httpx.Response, shown: str, *, attempts: int | None, note: str | None = None
    ) -> ProviderHTTPError:
        status = response.status_code
        parts = [f"{self.provider}: GET {shown} failed with HTTP {status} {response.reason_phrase}".rstrip()]
        if attempts is not None:
            parts.append(f"after {attempts} attempt(s)")
        if note:
            parts.append(note)
        message = " ".join(parts) + f": {self._excerpt(response)!r}"
        if status in (401, 403) and self.auth_hint:
            message += f" ({self.auth_hint})"
        return ProviderHTTPError(message, provider=self.provider, url=shown, status=status)

    def _excerpt(self, response: httpx.Response) -> str:
        text = response.text.strip().replace("\n", " ")
        if len(text) > BODY_EXCERPT_CHARS:
            text = text[:BODY_EXCERPT_CHARS] + "..."
        return self._scrub(text)

    def _scrub(self, text: str) -> str:
        """Replace any secret value that found its way into `text` (an echoed header, say) with `***`."""
        for value in self._headers.values():
            if isinstance(value, SecretStr):
                secret = value.get_secret_value()
                if secret and secret in text:
                    text = text.replace(secret, "***")
        return text
