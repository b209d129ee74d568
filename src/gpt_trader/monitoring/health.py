"""System health score, 0-100, from component health. Pure: inputs in, report out.

Formula. `ramp(x, good, bad)` is 100 when x <= good, 0 when x >= bad, linear in between. Components:

- freshness = ramp(seconds since the last ingested tick, max_data_age_secs, 3 * max_data_age_secs)
- errors    = ramp(pipeline error ratio over the trailing window, error_ratio_good, error_ratio_bad)
- latency   = ramp(p95 model latency in ms (worst model), latency_budget_ms, 2 * latency_budget_ms)
- resources = ramp(max(cpu %, memory %, disk %), resource_percent_good, resource_percent_bad)
- alerts    = max(0, 100 - 10 * warning - 25 * error - 50 * critical)   (active alerts; info costs nothing)

score = sum(weight_c * component_c) / sum(weight_c) over the components that have data (a component with no data
yet, e.g. no model has predicted, is left out rather than counted as perfect or broken; alerts always count);
then, if any CRITICAL alert is active, score = min(score, 50) so a critical condition can never read as healthy.
status: "healthy" if score >= 80, "degraded" if score >= 50, else "unhealthy".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gpt_trader.monitoring.alerts import AlertSeverity
from gpt_trader.monitoring.config import HealthConfig

ALERT_PENALTY = {
    AlertSeverity.INFO: 0.0,
    AlertSeverity.WARNING: 10.0,
    AlertSeverity.ERROR: 25.0,
    AlertSeverity.CRITICAL: 50.0,
}
CRITICAL_CAP = 50.0
HEALTHY_AT = 80.0
DEGRADED_AT = 50.0


@dataclass(frozen=True)
class HealthInputs:
    """What the score is computed from; None means "no data yet"."""

    data_age_secs: float | None = None
    error_ratio: float | None = None
    latency_p95_ms: float | None = None
    resource_percent: float | None = None
    active_alerts: Mapping[AlertSeverity, int] = field(default_factory=dict)


@dataclass(frozen=True)
class HealthReport:
    """The overall score, its status word and the per-component scores behind it."""

    score: float
    status: str
    components: dict[str, float]


def ramp(x: float, good: float, bad: float) -> float:
    """100 at or below `good`, 0 at or above `bad`, linear in between."""
    if x <= good:
        return 100.0
    if x >= bad:
        return 0.0
    return 100.0 * (bad - x) / (bad - good)


def compute_health(inputs: HealthInputs, config: HealthConfig | None = None) -> HealthReport:
    """Score `inputs` against the budgets in `config` (see the module docstring for the formula)."""
    cfg = config or HealthConfig()
    components: dict[str, float] = {}
    if inputs.data_age_secs is not None:
        components["freshness"] = ramp(inputs.data_age_secs, cfg.max_data_age_secs, 3 * cfg.max_data_age_secs)
    if inputs.error_ratio is not None:
        components["errors"] = ramp(inputs.error_ratio, cfg.error_ratio_good, cfg.error_ratio_bad)
    if inputs.latency_p95_ms is not None:
        components["latency"] = ramp(inputs.latency_p95_ms, cfg.latency_budget_ms, 2 * cfg.latency_budget_ms)
    if inputs.resource_percent is not None:
        components["resources"] = ramp(inputs.resource_percent, cfg.resource_percent_good, cfg.resource_percent_bad)
    penalty = sum(ALERT_PENALTY[sev] * n for sev, n in inputs.active_alerts.items())
    components["alerts"] = max(0.0, 100.0 - penalty)

    weights = cfg.weights.model_dump()
    total = sum(weights[c] for c in components)
    score = sum(weights[c] * s for c, s in components.items()) / total if total > 0 else components["alerts"]
    if inputs.active_alerts.get(AlertSeverity.CRITICAL, 0) > 0:
        score = min(score, CRITICAL_CAP)
    score = round(score, 2)
    status = "healthy" if score >= HEALTHY_AT else "degraded" if score >= DEGRADED_AT else "unhealthy"
    return HealthReport(score=score, status=status, components=components)
