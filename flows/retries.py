"""Retry policy of the tasks that do network or registry I/O: exponential backoff, transient failures only.

Every such task (capture, training and evaluation that log to MLflow, promotion, event emission, the live session)
takes `**IO_RETRIES`. Prefect retries it after 5, 10 and 20 s (jittered by up to half) when the failure is one
that waiting can cure: a connection refused, reset or timed out, a provider's 5xx or rate limit, the MLflow or
Prefect server or its database unreachable. A deterministic failure (bad credentials, an unknown symbol, a bug,
a validation refusal) fails at once instead of repeating a training three times.
"""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import State, TaskRun
from prefect.tasks import Task, exponential_backoff

from gpt_trader.data.sources.http import RATE_LIMIT_STATUSES, ProviderHTTPError

# MLflow error codes of a store or server that is down or overloaded (not of a bad request).
TRANSIENT_MLFLOW_CODES = frozenset({"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"})
MAX_CHAIN = 16


def is_transient(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from, is a failure that a later attempt may not meet."""
    import httpx
    import requests
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < MAX_CHAIN and all(current is not s for s in seen):
        seen.append(current)
        if isinstance(current, ProviderHTTPError):
            # The provider answered (or did not): its status decides, whatever wrapped it.
            return current.status is None or current.status >= 500 or current.status in RATE_LIMIT_STATUSES
        if isinstance(
            current,
            ConnectionError
            | TimeoutError
            | httpx.TransportError
            | requests.ConnectionError
            | requests.Timeout
            | sqlalchemy.exc.OperationalError
            | sqlalchemy.exc.DisconnectionError,
        ):
            return True
        if isinstance(current, MlflowException) and current.error_code in TRANSIENT_MLFLOW_CODES:
            return True
        current = current.__cause__ or current.__context__
    return False


def retry_transient(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect `retry_condition_fn`: retry only when the run raised a transient error.

    Prefect hands a raised exception over as the data of a `Failed` state; anything else is not retried.
    """
    return isinstance(state.data, BaseException) and is_transient(state.data)


# Task options for network and registry I/O: `@task(name=..., **IO_RETRIES)`.
IO_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=5),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_transient,
}
