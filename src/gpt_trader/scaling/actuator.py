"""Actuators apply scaling decisions. The only module of `gpt_trader.scaling` that imports Prefect (lazily).

- `RecordingActuator` (the default) records decisions and touches nothing: `AutoScaler()` runs with no server.
- `PrefectActuator` sets the `gpt-trader-live` pool's concurrency limit to the decided worker count, the
  `gpt-trader-training` pool's limit to the profile's, pauses the training pool while the profile says so (EXTREME)
  and resumes it after, and keeps `min(workers, max_local_workers)` local `prefect worker start` processes alive
  for the live pool: started in their own process group, stopped with SIGTERM, then SIGKILL after a bounded wait.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any, Protocol

from gpt_trader.scaling.config import ActuatorConfig
from gpt_trader.scaling.policy import ScalingDecision

log = logging.getLogger(__name__)


class Actuator(Protocol):
    """Something that turns a `ScalingDecision` into resources."""

    def apply(self, decision: ScalingDecision) -> None:
        """Make the world match `decision` (idempotent)."""
        ...

    def close(self) -> None:
        """Release whatever `apply` started (worker processes); pool settings are left as last applied."""
        ...

    def describe(self) -> dict[str, Any]:
        """A small status dict for `AutoScaler.get_status()`."""
        ...


class RecordingActuator:
    """Records the decisions it is given and changes nothing: the default, and the test double for the loop."""

    def __init__(self, keep: int = 1000) -> None:
        self.applied: deque[ScalingDecision] = deque(maxlen=keep)
        self.closed = False

    def apply(self, decision: ScalingDecision) -> None:
        """Remember `decision`."""
        self.applied.append(decision)

    def close(self) -> None:
        """Mark closed (there is nothing to release)."""
        self.closed = True

    def describe(self) -> dict[str, Any]:
        """Kind and how many decisions were recorded."""
        return {"kind": "recording", "applied": len(self.applied), "closed": self.closed}


class PrefectActuator:
    """Applies decisions to Prefect work pools and local worker processes through a real Prefect API."""

    def __init__(self, config: ActuatorConfig | None = None, api_url: str | None = None) -> None:
        from prefect.settings import PREFECT_API_URL

        self.config = config or ActuatorConfig()
        # Resolved now, in the caller's settings context, because worker subprocesses need it in their environment.
        self.api_url = api_url or PREFECT_API_URL.value()
        if not self.api_url:
            raise ValueError("PrefectActuator needs a Prefect API: pass api_url or set PREFECT_API_URL")
        self.workers: list[subprocess.Popen[bytes]] = []
        self.applied = 0
        self._prefect_bin = str(Path(sys.executable).parent / "prefect")

    def ensure_pools(self) -> None:
        """Create the live and training process pools if they do not exist (idempotent)."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import WorkPoolCreate
        from prefect.exceptions import ObjectAlreadyExists

        with get_client(sync_client=True) as client:
            for name in (self.config.live_pool, self.config.training_pool):
                try:
                    client.create_work_pool(WorkPoolCreate(name=name, type="process"))
                    log.info("created work pool %s", name)
                except ObjectAlreadyExists:
                    pass

    def apply(self, decision: ScalingDecision) -> None:
        """Set both pools' limits and the training pause, then match the local worker count."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import WorkPoolUpdate

        with get_client(sync_client=True) as client:
            client.update_work_pool(
                self.config.live_pool, WorkPoolUpdate(concurrency_limit=decision.live_concurrency_limit)
            )
            client.update_work_pool(
                self.config.training_pool,
                WorkPoolUpdate(
                    concurrency_limit=decision.training_concurrency_limit, is_paused=decision.training_paused
                ),
            )
        self.scale_workers(min(decision.workers, self.config.max_local_workers))
        self.applied += 1
        log.info(
            "applied: live limit %d, training limit %d%s, %d local workers (%s)",
            decision.live_concurrency_limit,
            decision.training_concurrency_limit,
            " (paused)" if decision.training_paused else "",
            len(self.workers),
            decision.reason,
        )

    def scale_workers(self, n: int) -> None:
        """Start or stop local worker processes until exactly `n` (bounded by config) are alive."""
        n = max(0, min(n, self.config.max_local_workers))
        self.workers = [p for p in self.workers if p.poll() is None]
        while len(self.workers) < n:
            self.workers.append(self._start_worker(len(self.workers)))
        while len(self.workers) > n:
            self._stop_worker(self.workers.pop())

    def _start_worker(self, index: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PREFECT_API_URL": self.api_url}
        cmd = [
            self._prefect_bin,
            "worker",
            "start",
            "--pool",
            self.config.live_pool,
            "--type",
            "process",
            "--name",
            f"gpt-trader-autoscaled-{os.getpid()}-{index}",
        ]
        # A new session makes the worker its own process-group leader, so stopping it also stops its flow runs.
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        log.info("started worker pid %d for pool %s", proc.pid, self.config.live_pool)
        return proc

    def _stop_worker(self, proc: subprocess.Popen[bytes]) -> None:
        timeout = self.config.worker_stop_timeout_secs
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is not None:
                break
            try:
                # The group id is the pid we started (start_new_session): only our worker and its children.
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d ignored %s after %.0fs", proc.pid, sig.name, timeout)
        log.info("stopped worker pid %d (exit %s)", proc.pid, proc.poll())

    def close(self) -> None:
        """Stop every local worker process; pool settings stay as last applied."""
        self.scale_workers(0)

    def describe(self) -> dict[str, Any]:
        """Kind, API, applied count and the live worker pids."""
        return {
            "kind": "prefect",
            "api_url": self.api_url,
            "applied": self.applied,
            "worker_pids": [p.pid for p in self.workers if p.poll() is None],
        }


def build_actuator(config: ActuatorConfig) -> Actuator:
    """The actuator `config.kind` names."""
    if config.kind == "prefect":
        actuator = PrefectActuator(config)
        actuator.ensure_pools()
        return actuator
    return RecordingActuator()
