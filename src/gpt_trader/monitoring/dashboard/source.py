"""What the dashboard shows: one JSON-safe snapshot built from the real monitor, portfolio and auto-scaler.

`DashboardSource` is the role the web app depends on; `LiveSource` fills it from the components the live trading
process already holds (it only reads them, and acts only through `AlertManager.acknowledge/resolve`).
`build_snapshot` is the pure part: component state in, dict out, so the page's contract is unit-tested without a
server. Figures come from the components' own public state: the Prometheus metrics the monitor exports (so the page
agrees with Grafana), the portfolio's equity curve and the scaler's status.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from prometheus_client.metrics import MetricWrapperBase

    from gpt_trader.monitoring.alerts import Alert
    from gpt_trader.monitoring.system import SystemMonitor
    from gpt_trader.scaling.autoscaler import AutoScaler
    from gpt_trader.trading.portfolio import EquityPoint, Portfolio

# The drift module writes `<reports>/drift/<dataset key>/latest.html` (+ `latest.json`, its summary) per dataset;
# a bare `<reports>/drift/latest.html` is shown too. The page links each as `reports/drift/<key>/latest.html`,
# which the app serves (behind the same auth) through `drift_report(key)`.
DRIFT_DIR = "drift"
LATEST_HTML = "latest.html"
DRIFT_URL_PREFIX = "reports/drift/"


@runtime_checkable
class DashboardSource(Protocol):
    """Everything the dashboard reads and the two things it may change (alert acknowledgement and resolution)."""

    def snapshot(self) -> dict[str, Any]:
        """The current state as JSON-safe values (see `build_snapshot` for the keys)."""
        ...

    def acknowledge(self, alert_id: str, by: str) -> dict[str, Any]:
        """Acknowledge an active alert and return it; `KeyError` if no active alert has that id."""
        ...

    def resolve(self, alert_id: str, by: str) -> dict[str, Any]:
        """Resolve an active alert by hand and return it; `KeyError` if no active alert has that id."""
        ...

    def drift_report(self, dataset: str) -> Path | None:
        """The latest drift report of `dataset` (its key, "" for a bare one), or None if there is none."""
        ...


class LiveSource:
    """A `DashboardSource` over the running process's `SystemMonitor`, `Portfolio` and `AutoScaler`.

    `lock`, when given, is held while the portfolio is read: `Portfolio` is not thread-safe and the page is served
    from another thread than the one applying fills, so the trading loop should hold the same lock while it
    changes the book. The monitor and the scaler are thread-safe on their own.
    """

    def __init__(
        self,
        monitor: SystemMonitor,
        portfolio: Portfolio | None = None,
        scaler: AutoScaler | None = None,
        reports_dir: Path | None = None,
        *,
        lock: threading.Lock | threading.RLock | None = None,
        max_points: int = 600,
        recent_alerts: int = 50,
        max_decisions: int = 20,
    ) -> None:
        self.monitor = monitor
        self.portfolio = portfolio
        self.scaler = scaler
        self.reports_dir = reports_dir
        self.lock = lock
        self.max_points = max_points
        self.recent_alerts = recent_alerts
        self.max_decisions = max_decisions

    def snapshot(self) -> dict[str, Any]:
        """Build the snapshot now (see `build_snapshot`)."""
        with self.lock if self.lock is not None else contextlib.nullcontext():
            return build_snapshot(
                self.monitor,
                self.portfolio,
                self.scaler,
                drift=find_drift_reports(self.reports_dir) if self.reports_dir is not None else [],
                now=datetime.now(UTC),
                max_points=self.max_points,
                recent_alerts=self.recent_alerts,
                max_decisions=self.max_decisions,
            )

    def acknowledge(self, alert_id: str, by: str) -> dict[str, Any]:
        """Acknowledge through the monitor's `AlertManager` (notifiers and history see the event)."""
        return json_safe(self.monitor.alert_manager.acknowledge(alert_id, by=by).to_dict())

    def resolve(self, alert_id: str, by: str) -> dict[str, Any]:
        """Resolve through the monitor's `AlertManager`."""
        return json_safe(self.monitor.alert_manager.resolve(alert_id, by=by).to_dict())

    def drift_report(self, dataset: str) -> Path | None:
        """`<reports_dir>/drift/<dataset>/latest.html` if it exists; never a path outside `<reports_dir>/drift`."""
        if self.reports_dir is None:
            return None
        parts = dataset.split("/") if dataset else []
        if any(part in ("", ".", "..") for part in parts):
            return None
        root = (self.reports_dir / DRIFT_DIR).resolve()
        path = (root / dataset / LATEST_HTML).resolve()
        return path if path.is_relative_to(root) and path.is_file() else None


# -- the snapshot --------------------------------------------------------------------------------------------------


def build_snapshot(
    monitor: SystemMonitor,
    portfolio: Portfolio | None,
    scaler: AutoScaler | None,
    *,
    drift: Sequence[Mapping[str, Any]] = (),
    now: datetime,
    max_points: int = 600,
    recent_alerts: int = 50,
    max_decisions: int = 20,
) -> dict[str, Any]:
    """The dashboard's whole state as JSON-safe values.

    Keys: generated_at, health {score, status, components}, pnl {equity, initial, cash, realized, unrealized,
    commissions, total, daily, return_pct} | None, equity_curve [[unix ms, equity]], positions [{symbol, quantity,
    avg_price, mark, market_value, unrealized_pnl}], alerts {active, recent, counts}, pipeline [{source, ticks_total,
    errors_total, dead_letters_total, ingest_rate, error_ratio, lag_secs}], models [{model, predictions,
    latency_p50_ms, latency_p95_ms, latency_mean_ms, last_latency_ms, accuracy}], scaling {...} | None,
    drift [{dataset, url, modified, drift_detected, share_drifted}] newest first (see `find_drift_reports`).
    """
    health = monitor.health()
    daily = monitor.latest("trading.daily_pnl")
    alert_manager = monitor.alert_manager
    snap: dict[str, Any] = {
        "generated_at": now.isoformat(),
        "health": {"score": health.score, "status": health.status, "components": dict(health.components)},
        "pnl": None,
        "equity_curve": [],
        "positions": [],
        "alerts": alerts_section(alert_manager.active_alerts(), alert_manager.history(limit=recent_alerts)),
        "pipeline": pipeline_rows(monitor),
        "models": model_rows(monitor),
        "scaling": scaling_section(scaler.get_status(), max_decisions) if scaler is not None else None,
        "drift": [dict(d) for d in drift],
    }
    if portfolio is not None:
        curve = list(portfolio.equity_curve)
        snap["pnl"] = pnl_section(portfolio, curve, daily)
        snap["equity_curve"] = downsample([(p.ts.timestamp() * 1000.0, float(p.equity)) for p in curve], max_points)
        snap["positions"] = position_rows(portfolio)
    return json_safe(snap)


def pnl_section(portfolio: Portfolio, curve: Sequence[EquityPoint], daily_pnl: float | None) -> dict[str, Any]:
    """Equity and P&L figures; `daily` is the monitor's `trading.daily_pnl` if recorded, else derived from the curve.

    The derived daily figure is equity now minus the last curve point of an earlier UTC day (so it works for daily
    bars and intraday marks alike), or minus the initial cash when the curve has no earlier day.
    """
    equity = portfolio.equity()
    if daily_pnl is None:
        base = portfolio.initial_cash
        if curve:
            today = curve[-1].ts.astimezone(UTC).date()
            for point in reversed(curve):
                if point.ts.astimezone(UTC).date() < today:
                    base = point.equity
                    break
        daily_pnl = float(equity - base)
    initial = portfolio.initial_cash
    return {
        "equity": float(equity),
        "initial": float(initial),
        "cash": float(portfolio.cash),
        "realized": float(portfolio.realized_pnl),
        "unrealized": float(portfolio.unrealized_pnl()),
        "commissions": float(portfolio.commissions),
        "total": float(portfolio.total_pnl()),
        "daily": float(daily_pnl),
        "return_pct": float((equity / initial - 1) * 100) if initial else None,
    }


def position_rows(portfolio: Portfolio) -> list[dict[str, Any]]:
    """One row per open position, largest absolute market value first."""
    rows: list[dict[str, Any]] = []
    for symbol, pos in portfolio.positions.items():
        mark = portfolio.mark_price(symbol)
        rows.append(
            {
                "symbol": symbol,
                "quantity": float(pos.quantity),
                "avg_price": float(pos.avg_price),
                "mark": float(mark),
                "market_value": float(pos.quantity * mark),
                "unrealized_pnl": float(pos.quantity * (mark - pos.avg_price)),
            }
        )
    rows.sort(key=lambda r: -abs(r["market_value"]))
    return rows


def alerts_section(active: Iterable[Alert], recent: Iterable[Alert]) -> dict[str, Any]:
    """Active alerts (most severe, then newest first), the recent history (newest first) and counts by severity."""
    active_rows = [a.to_dict() for a in active]
    # Two stable sorts (secondary key first): newest first within each severity, most severe first overall.
    active_rows.sort(key=lambda d: d["fired_at"] or "", reverse=True)
    active_rows.sort(key=lambda d: -_SEVERITY_ORDER.get(d["severity"], 0))
    counts: dict[str, int] = dict.fromkeys(_SEVERITY_ORDER, 0)
    for row in active_rows:
        counts[row["severity"]] = counts.get(row["severity"], 0) + 1
    return {"active": active_rows, "recent": [a.to_dict() for a in recent], "counts": counts}


_SEVERITY_ORDER = {"info": 0, "warning": 1, "error": 2, "critical": 3}


def pipeline_rows(monitor: SystemMonitor) -> list[dict[str, Any]]:
    """Per data source: ticks, errors and dead letters so far, and the latest rate, error ratio and lag."""
    m = monitor.metrics
    ticks = _by_label(m.ticks, "source", "_total")
    errors = _by_label(m.pipeline_errors, "source", "_total")
    dead = _by_label(m.dead_letters, "source", "_total")
    rate = _by_label(m.ingest_rate, "source")
    ratio = _by_label(m.error_ratio, "source")
    lag = _by_label(m.lag, "source")
    sources = sorted(set(ticks) | set(errors) | set(dead) | set(rate) | set(lag))
    return [
        {
            "source": s,
            "ticks_total": ticks.get(s, 0.0),
            "errors_total": errors.get(s, 0.0),
            "dead_letters_total": dead.get(s, 0.0),
            "ingest_rate": rate.get(s),
            "error_ratio": ratio.get(s),
            "lag_secs": lag.get(s),
        }
        for s in sources
    ]


def model_rows(monitor: SystemMonitor) -> list[dict[str, Any]]:
    """Per model: predictions, latency p50/p95/mean/last in ms, and rolling accuracy.

    p50/p95 are exact over the monitor's recent latency samples (the same ones its health score uses). Where those
    are not available they are interpolated in the exported histogram's buckets, as Grafana does; that is coarse
    below the first bucket (0.5 ms), which is why samples are preferred.
    """
    m = monitor.metrics
    # SystemMonitor keeps the last LATENCY_SAMPLE latencies per model for its health score but has no public
    # accessor for them yet; read them defensively and fall back to the histogram.
    samples: dict[str, list[float]] = {
        model: list(values) for model, values in list(getattr(monitor, "_latencies", {}).items())
    }
    predictions = _by_label(m.predictions, "model", "_total")
    accuracy = _by_label(m.accuracy, "model")
    counts = _by_label(m.model_latency, "model", "_count")
    sums = _by_label(m.model_latency, "model", "_sum")
    buckets: dict[str, list[tuple[float, float]]] = {}
    for family in m.model_latency.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                buckets.setdefault(sample.labels["model"], []).append((float(sample.labels["le"]), sample.value))
    rows = []
    for model in sorted(set(predictions) | set(counts)):
        count = counts.get(model, 0.0)
        recent = samples.get(model)
        if recent:
            p50_ms, p95_ms = sample_quantile(0.5, recent), sample_quantile(0.95, recent)
        else:
            b = buckets.get(model, [])
            p50, p95 = histogram_quantile(0.5, b), histogram_quantile(0.95, b)
            p50_ms = p50 * 1000 if p50 is not None else None
            p95_ms = p95 * 1000 if p95 is not None else None
        rows.append(
            {
                "model": model,
                "predictions": predictions.get(model, 0.0),
                "latency_p50_ms": p50_ms,
                "latency_p95_ms": p95_ms,
                "latency_mean_ms": sums.get(model, 0.0) / count * 1000 if count else None,
                "last_latency_ms": monitor.latest("model.latency_ms", {"model": model}),
                "accuracy": accuracy.get(model),
            }
        )
    return rows


def scaling_section(status: Mapping[str, Any], max_decisions: int = 20) -> dict[str, Any]:
    """The scaler's condition, allocation and cost, and its latest decisions (newest first) with their reasons."""
    decisions = list(status.get("last_decisions") or [])[-max_decisions:]
    decisions.reverse()
    return {
        "market_condition": status.get("market_condition"),
        "target_condition": status.get("target_condition"),
        "resources": dict(status.get("resources") or {}),
        "cost_per_hour": status.get("total_cost_per_hour"),
        "cost_limit_per_hour": status.get("cost_limit_usd_per_hour"),
        "budget_used": status.get("budget_used"),
        "reason": status.get("reason"),
        "updates": status.get("updates"),
        "decisions": [
            {
                "at": d.get("at"),
                "condition": d.get("condition"),
                "target": d.get("target"),
                "workers": d.get("workers"),
                "cost_usd_per_hour": d.get("cost_usd_per_hour"),
                "training_paused": d.get("training_paused"),
                "budget_limited": d.get("budget_limited"),
                "reason": d.get("reason"),
            }
            for d in decisions
        ],
    }


def find_drift_reports(reports_dir: Path) -> list[dict[str, Any]]:
    """Every `latest.html` under `<reports_dir>/drift`, newest first, with its verdict from the `latest.json` beside it.

    Entries: dataset (key relative to the drift folder, "" for a bare report), url, modified (ISO), drift_detected
    and share_drifted (None when the summary is missing or unreadable).
    """
    root = reports_dir / DRIFT_DIR
    if not root.is_dir():
        return []
    found: list[tuple[float, dict[str, Any]]] = []
    for html in root.rglob(LATEST_HTML):
        try:
            mtime = html.stat().st_mtime
        except OSError:  # replaced between the listing and now
            continue
        dataset = html.parent.relative_to(root).as_posix()
        dataset = "" if dataset == "." else dataset
        summary: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(html.with_suffix(".json").read_text())
            summary = loaded if isinstance(loaded, dict) else {}
        entry = {
            "dataset": dataset,
            "url": DRIFT_URL_PREFIX + (f"{dataset}/" if dataset else "") + LATEST_HTML,
            "modified": datetime.fromtimestamp(mtime, UTC).isoformat(),
            "drift_detected": summary.get("drift_detected"),
            "share_drifted": summary.get("share_drifted"),
        }
        found.append((mtime, entry))
    found.sort(key=lambda pair: pair[0], reverse=True)
    return [entry for _, entry in found]


# -- small pure helpers --------------------------------------------------------------------------------------------


def sample_quantile(q: float, values: Sequence[float]) -> float | None:
    """The nearest-rank q-quantile of `values` (the definition the monitor's health score uses), None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The q-quantile of a cumulative histogram [(upper bound, count <= bound)], interpolated as Prometheus does.

    Returns None for an empty histogram; a quantile in the +Inf bucket is the largest finite bound.
    """
    if not buckets:
        return None
    ordered = sorted(buckets)
    total = ordered[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def downsample(points: Sequence[tuple[float, float]], max_points: int) -> list[list[float]]:
    """At most ~`max_points` of a time series, keeping each bucket's low and high (drawdowns stay visible).

    The first and last points are always kept, so the chart starts and ends where the data does.
    """
    n = len(points)
    if n <= max_points or max_points < 4:
        return [[t, v] for t, v in points]
    buckets = max_points // 2 - 1
    out: list[tuple[float, float]] = [points[0]]
    inner = points[1:-1]
    size = len(inner) / buckets
    for b in range(buckets):
        chunk = inner[int(b * size) : int((b + 1) * size)]
        if not chunk:
            continue
        lo = min(range(len(chunk)), key=lambda i: chunk[i][1])
        hi = max(range(len(chunk)), key=lambda i: chunk[i][1])
        out.extend(chunk[i] for i in sorted({lo, hi}))
    out.append(points[-1])
    return [[t, v] for t, v in out]


def json_safe(value: Any) -> Any:
    """`value` with Decimals as floats, datetimes as ISO text and non-finite floats as None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, Decimal):
        return json_safe(float(value))
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def _by_label(metric: MetricWrapperBase, label: str, suffix: str = "") -> dict[str, float]:
    """`{label value: sample value}` of one labelled metric's samples named `<family><suffix>`."""
    out: dict[str, float] = {}
    for family in metric.collect():
        name = family.name + suffix
        for sample in family.samples:
            if sample.name == name and label in sample.labels:
                out[sample.labels[label]] = sample.value
    return out
