"""`AutoScaler`: market data in, scaling decisions out, applied off the data path by a background thread.

`update_market_data` classifies, forecasts and decides synchronously (microseconds, no I/O) and hands a *changed*
allocation to the actuator thread, which always applies the latest one (older pending ones are superseded, so a
slow Prefect API never queues stale work or blocks the caller). Time comes from the injected `Clock`.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections import deque
from datetime import datetime
from types import TracebackType
from typing import Any

from gpt_trader.core.clock import Clock, SystemClock
from gpt_trader.scaling.actuator import Actuator, build_actuator
from gpt_trader.scaling.conditions import MarketCondition, MarketConditionDetector, MarketFeatures
from gpt_trader.scaling.config import ScalingConfig
from gpt_trader.scaling.cost import CostTracker
from gpt_trader.scaling.forecast import LoadForecast, LoadForecaster
from gpt_trader.scaling.policy import ScalingDecision, decide_scaling

log = logging.getLogger(__name__)

_JOIN_SECS = 30.0


class AutoScaler:
    """Scales Prefect work pools and workers with the market condition, within bounds and the hourly budget.

    `AutoScaler()` needs no server: with the default config the actuator only records decisions (set
    `actuator.kind: prefect` or pass a `PrefectActuator` to drive real pools). Decisions are made from the first
    update; they are applied only between `start()` and `stop()`.
    """

    def __init__(
        self,
        config: ScalingConfig | None = None,
        *,
        actuator: Actuator | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config or ScalingConfig()
        self.clock: Clock = clock or SystemClock()
        self.actuator: Actuator = actuator if actuator is not None else build_actuator(self.config.actuator)
        self._detector = MarketConditionDetector(self.config.conditions)
        self._forecaster = LoadForecaster(self.config.forecast, self.config.conditions)
        self._costs = CostTracker()
        self._cond = threading.Condition()
        self._decisions: deque[ScalingDecision] = deque(maxlen=self.config.decision_history)
        self._errors: deque[str] = deque(maxlen=self.config.decision_history)
        self._features: MarketFeatures | None = None
        self._forecast: LoadForecast | None = None
        self._pending: ScalingDecision | None = None
        self._applied: ScalingDecision | None = None
        self._applying = False
        self._running = False
        self._thread: threading.Thread | None = None
        self._updates = 0
        first = decide_scaling(self.config, at=self.clock.now(), condition=self._detector.condition)
        self._current = first
        self._record(first)

    # -- data path ---------------------------------------------------------------------------------------------

    def update_market_data(self, price: float, volume: float, ts: datetime | None = None) -> ScalingDecision:
        """Fold in one price/volume observation (at event time `ts`, else the clock's now); return the decision.

        In bar mode (`conditions.bar_interval_secs` set, the default: daily bars) each call is one bar; in tick
        mode the elapsed time between calls (timezone-aware `ts`, else the clock) scales the variance and drives the
        tick rate. Call it from one thread (the data path); `get_status` may be called from any.
        """
        now = self.clock.now()
        when = ts or now
        condition, features = self._detector.update(price, volume, when.timestamp())
        forecast = self._forecaster.update(features.score) if features.ready and self.config.forecast.enabled else None
        decision = decide_scaling(
            self.config,
            at=when,
            condition=condition,
            forecast=forecast.condition if forecast else None,
            score=features.score if features.ready else None,
            forecast_upper=forecast.upper if forecast else None,
        )
        with self._cond:
            self._updates += 1
            self._features, self._forecast = features, forecast
            current = self._current
            changed = not decision.same_allocation(current) or (decision.condition, decision.target) != (
                current.condition,
                current.target,
            )
            if not changed:
                return current
            self._current = decision
            self._record(decision, now)
            if self._running and not decision.same_allocation(self._applied):
                self._pending = decision
                self._cond.notify_all()
        return decision

    def _record(self, decision: ScalingDecision, now: datetime | None = None) -> None:
        self._decisions.append(decision)
        self._costs.set_rate(decision.cost_usd_per_hour, now or decision.at)
        log.info("scaling decision: %s", decision.reason)

    # -- actuation -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start applying decisions (the current one first). Idempotent."""
        with self._cond:
            if self._running:
                return
            self._running = True
            self._pending = self._current
        # A copied context lets the thread see the caller's settings (e.g. a Prefect test harness's API URL).
        ctx = contextvars.copy_context()
        self._thread = threading.Thread(target=ctx.run, args=(self._run,), name="autoscaler-actuator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Apply what is pending, stop the actuator thread and release the actuator's processes. Idempotent."""
        with self._cond:
            was_running, self._running = self._running, False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=_JOIN_SECS)
            if self._thread.is_alive():
                log.error("actuator thread did not finish within %.0fs", _JOIN_SECS)
            self._thread = None
        if was_running:
            self.actuator.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and self._running:
                    self._cond.wait()
                if self._pending is None:
                    return
                decision, self._pending = self._pending, None
                self._applying = True
            try:
                self.actuator.apply(decision)
            except Exception as exc:
                log.exception("applying decision failed: %s", decision.reason)
                with self._cond:
                    self._applying = False
                    self._errors.append(f"{decision.at.isoformat()}: {type(exc).__name__}: {exc}")
                    if self._pending is None:
                        self._pending = decision
                    if self._running:
                        self._cond.wait(timeout=self.config.actuator.retry_secs)
                    else:
                        # Stopping: do not retry forever against a dead API.
                        self._pending = None
                    self._cond.notify_all()
                continue
            with self._cond:
                self._applying = False
                self._applied = decision
                self._cond.notify_all()

    def wait_applied(self, timeout: float = 10.0) -> bool:
        """Block until nothing is pending or being applied (True) or `timeout` seconds pass (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending is None and not self._applying, timeout=timeout)

    @property
    def running(self) -> bool:
        """Whether decisions are being applied."""
        return self._running

    @property
    def features(self) -> MarketFeatures | None:
        """The features of the latest update (None before the first)."""
        return self._features

    @property
    def condition(self) -> MarketCondition:
        """The current market condition."""
        return self._current.condition

    # -- status --------------------------------------------------------------------------------------------------

    def get_status(self) -> dict[str, Any]:
        """Condition, features, forecast, resources, $/hour and the last decisions with their reasons."""
        with self._cond:
            d = self._current
            spent = self._costs.accrue(self.clock.now())
            return {
                "running": self._running,
                "market_condition": d.condition.label,
                "target_condition": d.target.label,
                "updates": self._updates,
                "features": self._features.as_dict() if self._features else None,
                "forecast": self._forecast.as_dict() if self._forecast else None,
                "resources": {
                    "profile": d.profile.label,
                    "workers": d.workers,
                    "cores": d.cores,
                    "memory_gb": d.memory_gb,
                    "gpus": d.gpus,
                    "live_concurrency_limit": d.live_concurrency_limit,
                    "training_concurrency_limit": d.training_concurrency_limit,
                    "training_paused": d.training_paused,
                },
                "total_cost_per_hour": d.cost_usd_per_hour,
                "cost_limit_usd_per_hour": self.config.cost_limit_usd_per_hour,
                "budget_used": d.cost_usd_per_hour / self.config.cost_limit_usd_per_hour,
                "budget_limited": d.budget_limited,
                "spent_usd": spent,
                "reason": d.reason,
                "last_decisions": [x.as_dict() for x in self._decisions],
                "applied": self._applied.as_dict() if self._applied else None,
                "pending": self._pending is not None or self._applying,
                "actuator": self.actuator.describe(),
                "errors": list(self._errors),
            }

    def __enter__(self) -> AutoScaler:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
