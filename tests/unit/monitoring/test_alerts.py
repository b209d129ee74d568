"""Alert rules: conditions, windows, dedup, cooldown, acknowledge/resolve and history, on simulated time."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from gpt_trader.core.clock import SimClock
from gpt_trader.monitoring.alerts import AlertManager, AlertRule, AlertSeverity, AlertState


def _manager(clock: SimClock, cooldown: float = 300.0) -> AlertManager:
    return AlertManager(cooldown_secs=cooldown, clock=clock)


def _rule(**overrides: object) -> AlertRule:
    fields: dict[str, object] = {
        "name": "r",
        "metric_name": "m",
        "condition": "gt",
        "threshold": 10.0,
        "severity": AlertSeverity.ERROR,
    }
    fields.update(overrides)
    return AlertRule.model_validate(fields)


@pytest.mark.parametrize(
    ("condition", "value", "fires"),
    [
        ("gt", 10.5, True),
        ("gt", 10.0, False),
        ("ge", 10.0, True),
        ("ge", 9.99, False),
        ("lt", 9.5, True),
        ("lt", 10.0, False),
        ("le", 10.0, True),
        ("le", 10.01, False),
        ("eq", 10.0, True),
        ("eq", 0.1 + 0.2 + 9.7, True),  # float noise still counts as equal
        ("eq", 10.5, False),
    ],
)
def test_rule_condition_against_threshold_fires_as_expected(
    clock: SimClock, condition: str, value: float, fires: bool
) -> None:
    manager = _manager(clock)
    manager.add_rule(_rule(condition=condition))
    events = manager.observe("m", value)
    assert [e.kind for e in events] == (["firing"] if fires else [])
    assert len(manager.active_alerts()) == int(fires)


def test_rule_unknown_condition_is_rejected() -> None:
    with pytest.raises(ValidationError):
        _rule(condition="gte")


def test_rule_aggregation_without_window_is_rejected() -> None:
    with pytest.raises(ValidationError, match="window_secs"):
        _rule(aggregation="max")


def test_manager_duplicate_rule_name_raises(clock: SimClock) -> None:
    manager = _manager(clock)
    manager.add_rule(_rule())
    with pytest.raises(ValueError, match="already exists"):
        manager.add_rule(_rule(threshold=3))


def test_manager_other_metric_does_not_trigger_rule(clock: SimClock) -> None:
    manager = _manager(clock)
    manager.add_rule(_rule())
    assert manager.observe("other", 1e9) == []


def test_alert_repeated_breach_deduplicates_to_one_active_alert(clock: SimClock) -> None:
    manager = _manager(clock)
    manager.add_rule(_rule())
    fired = manager.observe("m", 11)
    for v in (12, 13, 14):
        clock.advance(timedelta(seconds=1))
        assert manager.observe("m", v) == []
    (alert,) = manager.active_alerts()
    assert alert.id == fired[0].alert.id
    assert alert.occurrences == 4
    assert alert.last_value == 14
    assert alert.value == 11  # the value that fired it is kept


def test_alert_distinct_labels_fire_separately(clock: SimClock) -> None:
    manager = _manager(clock)
    manager.add_rule(_rule(metric_name="model.latency_ms"))
    manager.observe("model.latency_ms", 50, {"model": "a"})
    manager.observe("model.latency_ms", 50, {"model": "b"})
    manager.observe("model.latency_ms", 60, {"model": "a"})
    assert sorted(a.labels["model"] for a in manager.active_alerts()) == ["a", "b"]


def test_rule_label_filter_ignores_other_labels(clock: SimClock) -> None:
    manager = _manager(clock)
    manager.add_rule(_rule(labels={"model": "a"}))
    assert manager.observe("m", 50, {"model": "b"}) == []
    assert len(manager.observe("m", 50, {"model": "a", "region": "eu"})) == 1


def test_alert_condition_clears_auto_resolves(clock: SimClock) -> None:
    manager = _manager(clock)
    manager.add_rule(_rule())
    manager.observe("m", 20)
    clock.advance(timedelta(seconds=5))
    (event,) = manager.observe("m", 5)
    assert event.kind == "resolved"
    assert event.alert.resolved_by == "auto"
    assert event.alert.resolved_at == clock.now()
    assert manager.active_alerts() == []
    assert manager.history()[0].state is AlertState.RESOLVED


def test_alert_rebreach_within_cooldown_is_suppressed(clock: SimClock) -> None:
    manager = _manager(clock, cooldown=300)
    manager.add_rule(_rule())
    manager.observe("m", 20)
    clock.advance(timedelta(seconds=10))
    manager.observe("m", 0)  # auto-resolves
    clock.advance(timedelta(seconds=10))
    assert manager.observe("m", 20) == []
    assert manager.observe("m", 21) == []
    assert manager.suppressed_counts() == {"r": 1}  # one episode, not one per sample
    clock.advance(timedelta(seconds=281))  # 301 s after the first firing
    (event,) = manager.observe("m", 22)
    assert event.kind == "firing"
    assert len(manager.history()) == 2


def test_rule_cooldown_override_beats_manager_default(clock: SimClock) -> None:
    manager = _manager(clock, cooldown=300)
    manager.add_rule(_rule(cooldown_secs=0))
    manager.observe("m", 20)
    manager.observe("m", 0)
    assert [e.kind for e in manager.observe("m", 20)] == ["firing"]


def test_alert_acknowledge_keeps_active_and_does_not_refire(clock: SimClock) -> None:
    manager = _manager(clock)
    manager.add_rule(_rule())
    (event,) = manager.observe("m", 20)
    clock.advance(timedelta(seconds=3))
    alert = manager.acknowledge(event.alert.id, by="alice")
    assert alert.state is AlertState.ACKNOWLEDGED
    assert (alert.acknowledged_by, alert.acknowledged_at) == ("alice", clock.now())
    assert manager.observe("m", 25) == []
    assert manager.active_alerts()[0].state is AlertState.ACKNOWLEDGED
    (resolved,) = manager.observe("m", 1)
    assert resolved.kind == "resolved"


def test_alert_manual_resolve_closes_and_refires_after_cooldown(clock: SimClock) -> None:
    manager = _manager(clock, cooldown=60)
    manager.add_rule(_rule())
    (event,) = manager.observe("m", 20)
    alert = manager.resolve(event.alert.id, by="bob")
    assert (alert.state, alert.resolved_by) == (AlertState.RESOLVED, "bob")
    assert manager.observe("m", 20) == []  # still breaching, but inside the cooldown
    clock.advance(timedelta(seconds=61))
    assert [e.kind for e in manager.observe("m", 20)] == ["firing"]


def test_alert_resolve_unknown_id_raises_keyerror(clock: SimClock) -> None:
    manager = _manager(clock)
    with pytest.raises(KeyError, match="no active alert"):
        manager.resolve("nope")


def test_rule_for_secs_fires_only_when_sustained(clock: SimClock) -> None:
    manager = _manager(clock)
    manager.add_rule(_rule(for_secs=30))
    assert manager.observe("m", 20) == []
    clock.advance(timedelta(seconds=20))
    assert manager.observe("m", 20) == []
    clock.advance(timedelta(seconds=5))
    manager.observe("m", 1)  # breaks the streak
    clock.advance(timedelta(seconds=5))
    manager.observe("m", 20)
    clock.advance(timedelta(seconds=29))
    assert manager.evaluate() == []
    clock.advance(timedelta(seconds=1))
    assert [e.kind for e in manager.evaluate()] == ["firing"]  # fires on the sampler's tick, no new sample needed


def test_rule_window_mean_fires_on_average_not_spike(clock: SimClock) -> None:
    manager = _manager(clock)
    manager.add_rule(_rule(window_secs=60, threshold=10))
    for v in (0, 0, 25):  # spike: mean 8.3
        manager.observe("m", v)
        clock.advance(timedelta(seconds=10))
    assert manager.active_alerts() == []
    assert [e.kind for e in manager.observe("m", 30)] == ["firing"]  # mean 13.75


def test_rule_window_expiry_resolves_on_evaluate(clock: SimClock) -> None:
    manager = _manager(clock)
    manager.add_rule(_rule(window_secs=60, aggregation="max"))
    manager.observe("m", 50)
    clock.advance(timedelta(seconds=30))
    manager.observe("m", 1)
    assert len(manager.active_alerts()) == 1  # max over the window is still 50
    clock.advance(timedelta(seconds=31))
    (event,) = manager.evaluate()  # the 50 has left the window
    assert event.kind == "resolved"


def test_rule_empty_window_changes_nothing(clock: SimClock) -> None:
    manager = _manager(clock)
    manager.add_rule(_rule(window_secs=10))
    manager.observe("m", 50)
    clock.advance(timedelta(seconds=60))
    assert manager.evaluate() == []  # no data is not "condition cleared"
    assert len(manager.active_alerts()) == 1


def test_manager_remove_rule_resolves_its_alerts(clock: SimClock) -> None:
    manager = _manager(clock)
    manager.add_rule(_rule())
    manager.observe("m", 50)
    manager.remove_rule("r")
    assert manager.active_alerts() == []
    assert manager.history()[0].resolved_by == "rule-removed"
    assert manager.observe("m", 50) == []


def test_manager_history_newest_first_and_filtered(clock: SimClock) -> None:
    manager = _manager(clock, cooldown=0)
    manager.add_rule(_rule())
    manager.add_rule(_rule(name="low", condition="lt", threshold=0, severity=AlertSeverity.INFO))
    manager.observe("m", 50)
    manager.observe("m", 5)
    manager.observe("m", -1)
    assert [a.rule for a in manager.history()] == ["low", "r"]
    assert [a.rule for a in manager.history(rule="r")] == ["r"]
    assert manager.active_counts()[AlertSeverity.INFO] == 1


def test_manager_listener_gets_events_and_failure_is_contained(clock: SimClock) -> None:
    manager = _manager(clock)
    manager.add_rule(_rule())
    seen: list[str] = []

    def broken(event: object) -> None:
        raise RuntimeError("boom")

    manager.subscribe(broken)
    manager.subscribe(lambda e: seen.append(e.kind))
    manager.observe("m", 50)
    assert seen == ["firing"]


def test_alert_to_dict_is_json_ready(clock: SimClock) -> None:
    manager = _manager(clock)
    manager.add_rule(_rule())
    (event,) = manager.observe("m", 50, {"model": "x"})
    d = event.alert.to_dict()
    assert d["severity"] == "error"
    assert d["state"] == "firing"
    assert d["fired_at"] == clock.now().isoformat()
    assert d["labels"] == {"model": "x"}


def test_rule_window_high_rate_keeps_bounded_buckets_and_exact_mean(clock: SimClock) -> None:
    manager = _manager(clock)
    manager.add_rule(_rule(window_secs=10, threshold=1e9))
    for i in range(20_000):  # 2 kHz for 10 s
        manager.observe("m", float(i % 10))
        clock.advance(timedelta(microseconds=500))
    state = next(iter(manager._states.values()))
    assert state.window is not None
    assert len(state.window.buckets) <= 121
    assert state.window.aggregate("mean") == pytest.approx(4.5)
