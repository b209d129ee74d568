"""The I/O retry policy: which failures are transient (real errors from real refused connections), and which
tasks carry the policy."""

from __future__ import annotations

import pytest

from flows.retries import IO_RETRIES, is_transient, retry_transient
from gpt_trader.core.errors import DataError, ValidationFailedError
from gpt_trader.data.sources.http import ProviderHTTPError
from tests.integration.conftest import free_port


def _raised(call) -> BaseException:
    try:
        call()
    except BaseException as exc:
        return exc
    raise AssertionError("expected a failure")


def test_is_transient_refused_connections_of_http_and_database_clients():
    import httpx
    import sqlalchemy

    port = free_port()  # nothing listens there: the connection is refused
    assert is_transient(_raised(lambda: httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)))
    engine = sqlalchemy.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/mlflow")
    assert is_transient(_raised(engine.connect))
    assert is_transient(ConnectionResetError("reset by peer"))
    assert is_transient(TimeoutError("read timed out"))


def test_is_transient_follows_the_chain_of_a_wrapped_network_error():
    def wrapped():
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as exc:
            raise RuntimeError("API request failed") from exc

    assert is_transient(_raised(wrapped))
    assert not is_transient(RuntimeError("API request failed"))


@pytest.mark.parametrize(
    ("status", "transient"),
    [(None, True), (503, True), (500, True), (429, True), (418, True), (400, False), (401, False)],
)
def test_is_transient_provider_errors_by_status(status, transient):
    exc = ProviderHTTPError("binance: GET /api/v3/klines failed", provider="binance", url="/", status=status)
    assert is_transient(exc) is transient


def test_is_transient_mlflow_errors_by_code_and_deterministic_failures_never():
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2 as codes

    # What MLflow's SQL store raises when its database is unreachable, and its REST client on a 503 / 429.
    assert is_transient(MlflowException("connection refused", error_code=codes.TEMPORARILY_UNAVAILABLE))
    assert is_transient(MlflowException("slow down", error_code=codes.REQUEST_LIMIT_EXCEEDED))
    assert not is_transient(MlflowException("no such model", error_code=codes.RESOURCE_DOES_NOT_EXIST))
    for exc in (ValueError("bad"), DataError("NaN close"), ValidationFailedError("quarantined"), KeyError("x")):
        assert not is_transient(exc)


def test_retry_transient_reads_the_exception_prefect_hands_over():
    from prefect.states import Completed, Failed

    assert retry_transient(None, None, Failed(data=ConnectionRefusedError("refused")))  # type: ignore[arg-type]
    assert not retry_transient(None, None, Failed(data=ValueError("bug")))  # type: ignore[arg-type]
    assert not retry_transient(None, None, Completed())  # type: ignore[arg-type]


def test_every_network_or_registry_task_retries_transient_failures_with_exponential_backoff():
    from flows.capture import capture_task
    from flows.drift import emit_task
    from flows.evaluate import evaluate_task
    from flows.live import live_task
    from flows.promote import promote_task
    from flows.train_rl import train_rl_task
    from flows.train_transformer import train_transformer_task

    assert IO_RETRIES["retries"] == 3
    io_tasks = (capture_task, train_transformer_task, train_rl_task, evaluate_task, promote_task, emit_task, live_task)
    for task in io_tasks:
        assert task.retries == 3, task.name
        assert task.retry_delay_seconds == [5, 10, 20], task.name
        assert task.retry_jitter_factor == 0.5, task.name
        assert task.retry_condition_fn is retry_transient, task.name
