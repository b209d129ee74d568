"""Threshold alert rules and their lifecycle: fire, deduplicate, cool down, acknowledge, resolve.

`AlertManager.observe` is called on the trading path for every recorded sample, so it only touches the rules
indexed under that metric name and never does I/O: events go to listeners (the notification queue, the history
buffer, Prometheus counters) that must themselves be non-blocking.

Semantics, per rule and label set (the dedup key):
- The rule's value is the latest sample, or with `window_secs > 0` the `aggregation` (mean/min/max) of the samples
  in the trailing window. An empty window is "no data" and changes nothing. Windows are kept as
  `WINDOW_BUCKETS` time buckets with running totals, so memory and cost per sample stay constant however fast a
  metric is recorded; the window's trailing edge is exact to within one bucket (window_secs / WINDOW_BUCKETS).
- The condition must hold continuously for `for_secs` (0 = at once) before an alert fires.
- At most one active (firing or acknowledged) alert exists per key; further breaches update it.
- After an alert fires, no new alert fires for the same key until the cooldown (rule's `cooldown_secs`, else the
  manager's) has passed since that firing; breaches in between are counted as suppressed.
- When the condition is evaluated false, the active alert auto-resolves. `acknowledge` silences without resolving;
  `resolve` closes it by hand (if the condition still holds, it fires again once the cooldown has passed).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import operator
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from gpt_trader.config_base import Section
from gpt_trader.core.clock import Clock, SystemClock

if TYPE_CHECKING:
    from gpt_trader.monitoring.notifiers import NotificationDispatcher, Notifier

log = logging.getLogger(__name__)

Condition = Literal["gt", "lt", "ge", "le", "eq"]
Aggregation = Literal["mean", "min", "max"]
LabelKey = tuple[tuple[str, str], ...]
WINDOW_BUCKETS = 120


class AlertSeverity(StrEnum):
    """How bad an alert is; routes compare by `rank`."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for INFO up to 3 for CRITICAL."""
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {AlertSeverity.INFO: 0, AlertSeverity.WARNING: 1, AlertSeverity.ERROR: 2, AlertSeverity.CRITICAL: 3}


def _eq(value: float, threshold: float) -> bool:
    # Metric values are floats; exact equality would miss 0.1 + 0.2 == 0.3.
    return math.isclose(value, threshold, rel_tol=1e-9, abs_tol=1e-12)


_CONDITIONS: dict[str, Callable[[float, float], bool]] = {
    "gt": operator.gt,
    "lt": operator.lt,
    "ge": operator.ge,
    "le": operator.le,
    "eq": _eq,
}


class AlertRule(Section):
    """A threshold on one metric (dotted name, e.g. "trading.daily_pnl"), optionally sustained or windowed."""

    name: str = Field(min_length=1)
    metric_name: str = Field(min_length=1)
    condition: Condition
    threshold: float
    severity: AlertSeverity = AlertSeverity.WARNING
    # Condition must hold this long before firing (debounces spikes).
    for_secs: float = Field(default=0.0, ge=0)
    # > 0: compare the aggregation of the samples in this trailing window instead of the latest sample.
    window_secs: float = Field(default=0.0, ge=0)
    aggregation: Aggregation = "mean"
    # Only samples carrying all these labels are seen by the rule.
    labels: dict[str, str] = Field(default_factory=dict)
    # Overrides the manager's cooldown (`monitoring.alert_cooldown_secs`) for this rule.
    cooldown_secs: float | None = Field(default=None, ge=0)
    description: str = ""

    @model_validator(mode="after")
    def _aggregation_needs_window(self) -> AlertRule:
        if self.aggregation != "mean" and self.window_secs == 0:
            raise ValueError(f"rule {self.name!r}: aggregation={self.aggregation!r} needs window_secs > 0")
        return self

    def describe(self) -> str:
        """Human text such as `trading.daily_pnl lt -5000`."""
        subject = (
            self.metric_name
            if self.window_secs == 0
            else f"{self.aggregation}({self.metric_name}[{self.window_secs:g}s])"
        )
        return f"{subject} {self.condition} {self.threshold:g}"


class AlertState(StrEnum):
    """Lifecycle of one alert."""

    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


@dataclass
class Alert:
    """One firing of a rule for one label set, updated in place until it is resolved."""

    id: str
    rule: str
    metric_name: str
    severity: AlertSeverity
    condition: str
    threshold: float
    labels: dict[str, str]
    value: float
    message: str
    fired_at: datetime
    state: AlertState = AlertState.FIRING
    last_value: float = math.nan
    occurrences: int = 1
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None

    @property
    def active(self) -> bool:
        """Firing or acknowledged (not yet resolved)."""
        return self.state is not AlertState.RESOLVED

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (ISO timestamps, plain strings) for webhooks, history and the dashboard."""
        out = dataclasses.asdict(self)
        out["severity"] = self.severity.value
        out["state"] = self.state.value
        for key in ("fired_at", "acknowledged_at", "resolved_at"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        return out


EventKind = Literal["firing", "acknowledged", "resolved"]


@dataclass(frozen=True)
class AlertEvent:
    """A lifecycle transition, carrying a snapshot of the alert so later updates don't change what was sent."""

    kind: EventKind
    alert: Alert
    at: datetime


AlertListener = Callable[[AlertEvent], None]


class _Window:
    """Time-bucketed samples of a trailing window with running sum/count and cached min/max."""

    __slots__ = ("buckets", "count", "hi", "lo", "total", "width")

    def __init__(self, window_secs: float) -> None:
        self.width = window_secs / WINDOW_BUCKETS
        # Each bucket: [start, sum, count, min, max]; lists so the newest can be updated in place.
        self.buckets: deque[list[float]] = deque()
        self.total = 0.0
        self.count = 0
        self.lo = math.inf
        self.hi = -math.inf

    def add(self, ts: float, value: float) -> None:
        buckets = self.buckets
        if buckets and ts < buckets[-1][0] + self.width:  # also absorbs the odd out-of-order sample
            b = buckets[-1]
            b[1] += value
            b[2] += 1
            if value < b[3]:
                b[3] = value
            if value > b[4]:
                b[4] = value
        else:
            buckets.append([math.floor(ts / self.width) * self.width, value, 1, value, value])
        self.total += value
        self.count += 1
        if value < self.lo:
            self.lo = value
        if value > self.hi:
            self.hi = value

    def prune(self, horizon: float) -> None:
        buckets = self.buckets
        if not buckets or buckets[0][0] + self.width > horizon:
            return
        while buckets and buckets[0][0] + self.width <= horizon:
            b = buckets.popleft()
            self.total -= b[1]
            self.count -= int(b[2])
        if buckets:
            self.lo = min(b[3] for b in buckets)
            self.hi = max(b[4] for b in buckets)
        else:  # reset exactly, so running-sum rounding never outlives the data
            self.total, self.count, self.lo, self.hi = 0.0, 0, math.inf, -math.inf

    def aggregate(self, kind: str) -> float | None:
        if self.count == 0:
            return None
        if kind == "mean":
            return self.total / self.count
        return self.hi if kind == "max" else self.lo


@dataclass
class _KeyState:
    """Evaluation state of one rule for one label set."""

    labels: dict[str, str]
    last_value: float | None = None
    window: _Window | None = None
    pending_since: float | None = None
    last_fired: float | None = None
    suppressing: bool = False
    alert: Alert | None = None


def label_key(labels: Mapping[str, str] | None) -> LabelKey:
    """Canonical, hashable form of a label set."""
    if not labels:
        return ()
    return tuple(sorted(labels.items()))


class AlertManager:
    """Evaluates `AlertRule`s on observed samples and routes lifecycle events to notifiers and listeners."""

    def __init__(
        self,
        *,
        cooldown_secs: float = 300.0,
        clock: Clock | None = None,
        history_size: int = 10_000,
        dispatcher: NotificationDispatcher | None = None,
    ) -> None:
        self.cooldown_secs = cooldown_secs
        self.clock: Clock = clock or SystemClock()
        self._dispatcher = dispatcher
        self._rules: dict[str, AlertRule] = {}
        self._by_metric: dict[str, list[AlertRule]] = {}
        self._states: dict[tuple[str, LabelKey], _KeyState] = {}
        self._alerts: dict[str, Alert] = {}  # active alerts by id
        self._history: deque[Alert] = deque(maxlen=history_size)
        self._listeners: list[AlertListener] = []
        self._suppressed: dict[str, int] = {}
        # One lock: observe() runs on trading threads while the sampler thread calls evaluate().
        self._lock = threading.Lock()

    # -- configuration -------------------------------------------------------------------------------------------

    def add_rule(self, rule: AlertRule) -> None:
        """Register a rule; a second rule with the same name is refused (names key dedup and history)."""
        with self._lock:
            if rule.name in self._rules:
                raise ValueError(f"alert rule {rule.name!r} already exists; remove it first")
            self._rules[rule.name] = rule
            self._by_metric.setdefault(rule.metric_name, []).append(rule)

    def remove_rule(self, name: str) -> None:
        """Drop a rule and its evaluation state; its active alerts resolve (by "rule-removed")."""
        events: list[AlertEvent] = []
        with self._lock:
            rule = self._rules.pop(name)
            self._by_metric[rule.metric_name].remove(rule)
            now = self.clock.now()
            for key in [k for k in self._states if k[0] == name]:
                state = self._states.pop(key)
                if state.alert is not None:
                    events.append(self._resolve_locked(state, now, by="rule-removed"))
        self._emit(events)

    @property
    def rules(self) -> list[AlertRule]:
        """Registered rules in insertion order."""
        return list(self._rules.values())

    def subscribe(self, listener: AlertListener) -> None:
        """Call `listener` with every lifecycle event; it runs on the caller's thread so it must not block."""
        self._listeners.append(listener)

    def add_notifier(
        self, notifier: Notifier, *, min_severity: AlertSeverity = AlertSeverity.INFO, send_resolved: bool = True
    ) -> None:
        """Route events of alerts at or above `min_severity` to `notifier` (delivered on its own worker thread)."""
        if self._dispatcher is None:
            from gpt_trader.monitoring.notifiers import NotificationDispatcher

            self._dispatcher = NotificationDispatcher()
        self._dispatcher.add(notifier, min_severity=min_severity, send_resolved=send_resolved)

    @property
    def dispatcher(self) -> NotificationDispatcher | None:
        """The notification queue, once a notifier has been added."""
        return self._dispatcher

    # -- evaluation ----------------------------------------------------------------------------------------------

    def observe(
        self, metric_name: str, value: float, labels: Mapping[str, str] | None = None, at: datetime | None = None
    ) -> list[AlertEvent]:
        """Feed one sample to the rules on `metric_name`; return the lifecycle events it caused."""
        rules = self._by_metric.get(metric_name)
        if not rules:
            return []
        now = at or self.clock.now()
        ts = now.timestamp()
        key = label_key(labels)
        events: list[AlertEvent] = []
        with self._lock:
            for rule in rules:
                if rule.labels and any((labels or {}).get(k) != v for k, v in rule.labels.items()):
                    continue
                state = self._states.get((rule.name, key))
                if state is None:
                    state = self._states[(rule.name, key)] = _KeyState(labels=dict(labels or {}))
                state.last_value = value
                if rule.window_secs > 0:
                    if state.window is None:
                        state.window = _Window(rule.window_secs)
                    state.window.add(ts, value)
                event = self._step(rule, state, now, ts)
                if event is not None:
                    events.append(event)
        if events:
            self._emit(events)
        return events

    def evaluate(self, at: datetime | None = None) -> list[AlertEvent]:
        """Re-check every rule at `at` (default now): slides windows and completes `for_secs` waits."""
        now = at or self.clock.now()
        ts = now.timestamp()
        events: list[AlertEvent] = []
        with self._lock:
            for (name, _), state in self._states.items():
                event = self._step(self._rules[name], state, now, ts)
                if event is not None:
                    events.append(event)
        if events:
            self._emit(events)
        return events

    def _value(self, rule: AlertRule, state: _KeyState, ts: float) -> float | None:
        if rule.window_secs == 0:
            return state.last_value
        window = state.window
        if window is None:
            return None
        window.prune(ts - rule.window_secs)
        return window.aggregate(rule.aggregation)

    def _step(self, rule: AlertRule, state: _KeyState, now: datetime, ts: float) -> AlertEvent | None:
        value = self._value(rule, state, ts)
        if value is None:
            return None
        if not _CONDITIONS[rule.condition](value, rule.threshold):
            state.pending_since = None
            state.suppressing = False
            if state.alert is not None:
                return self._resolve_locked(state, now, by="auto")
            return None
        if state.alert is not None:
            state.alert.last_value = value
            state.alert.occurrences += 1
            return None
        if state.pending_since is None:
            state.pending_since = ts
        if ts - state.pending_since < rule.for_secs:
            return None
        cooldown = self.cooldown_secs if rule.cooldown_secs is None else rule.cooldown_secs
        if state.last_fired is not None and ts - state.last_fired < cooldown:
            if not state.suppressing:  # count episodes, not samples
                state.suppressing = True
                self._suppressed[rule.name] = self._suppressed.get(rule.name, 0) + 1
            return None
        state.suppressing = False
        state.last_fired = ts
        labels = dict(state.labels)
        shown = f" {labels}" if labels else ""
        alert = Alert(
            id=uuid.uuid4().hex[:16],
            rule=rule.name,
            metric_name=rule.metric_name,
            severity=rule.severity,
            condition=rule.condition,
            threshold=rule.threshold,
            labels=labels,
            value=value,
            last_value=value,
            message=f"[{rule.severity.value.upper()}] {rule.name}: {rule.describe()} (value {value:g}){shown}",
            fired_at=now,
        )
        state.alert = alert
        self._alerts[alert.id] = alert
        self._history.append(alert)
        log.warning("alert fired: %s", alert.message)
        return AlertEvent("firing", dataclasses.replace(alert, labels=dict(labels)), now)

    def _resolve_locked(self, state: _KeyState, now: datetime, *, by: str) -> AlertEvent:
        alert = state.alert
        assert alert is not None
        state.alert = None
        alert.state = AlertState.RESOLVED
        alert.resolved_at = now
        alert.resolved_by = by
        self._alerts.pop(alert.id, None)
        log.info("alert resolved (%s): %s", by, alert.message)
        return AlertEvent("resolved", dataclasses.replace(alert), now)

    def _emit(self, events: Iterable[AlertEvent]) -> None:
        for event in events:
            if self._dispatcher is not None:
                self._dispatcher.submit(event)
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:  # a broken listener must not break recording
                    log.exception("alert listener %r failed", listener)

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def acknowledge(self, alert_id: str, by: str = "operator") -> Alert:
        """Mark an active alert as seen; it stays active (no re-notification) until resolved."""
        with self._lock:
            alert = self._active(alert_id)
            now = self.clock.now()
            alert.state = AlertState.ACKNOWLEDGED
            alert.acknowledged_at = now
            alert.acknowledged_by = by
            event = AlertEvent("acknowledged", dataclasses.replace(alert), now)
        self._emit([event])
        return alert

    def resolve(self, alert_id: str, by: str = "operator") -> Alert:
        """Close an active alert by hand."""
        with self._lock:
            alert = self._active(alert_id)
            state = self._states[(alert.rule, label_key(alert.labels))]
            state.pending_since = None
            event = self._resolve_locked(state, self.clock.now(), by=by)
        self._emit([event])
        return alert

    def _active(self, alert_id: str) -> Alert:
        try:
            return self._alerts[alert_id]
        except KeyError:
            raise KeyError(f"no active alert with id {alert_id!r}") from None

    # -- queries -------------------------------------------------------------------------------------------------

    def active_alerts(self, severity: AlertSeverity | None = None) -> list[Alert]:
        """Firing or acknowledged alerts, oldest first, optionally of one severity."""
        with self._lock:
            alerts = list(self._alerts.values())
        return [a for a in alerts if severity is None or a.severity is severity]

    def active_counts(self) -> dict[AlertSeverity, int]:
        """Number of active alerts per severity (all severities present, zeros included)."""
        counts = dict.fromkeys(AlertSeverity, 0)
        for alert in self.active_alerts():
            counts[alert.severity] += 1
        return counts

    def history(self, limit: int | None = None, rule: str | None = None) -> list[Alert]:
        """Alerts fired (bounded by `history_size`), newest first, optionally for one rule."""
        with self._lock:
            alerts = [a for a in reversed(self._history) if rule is None or a.rule == rule]
        return alerts[:limit] if limit is not None else alerts

    def suppressed_counts(self) -> dict[str, int]:
        """Breach episodes per rule that the cooldown kept from firing."""
        with self._lock:
            return dict(self._suppressed)

    def close(self, timeout: float = 2.0) -> None:
        """Stop notification workers (pending deliveries get `timeout` seconds to finish)."""
        if self._dispatcher is not None:
            self._dispatcher.close(timeout=timeout)
