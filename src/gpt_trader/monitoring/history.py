"""Metric and alert-event history in a SQL store (SQLAlchemy 2 Core): SQLite by default, PostgreSQL in production.

`append` only puts the sample in a bounded in-memory buffer (the trading path never waits on the database); a
writer thread flushes it in batched multi-row INSERTs every `flush_interval_secs` or when `batch_size` samples
wait, and purges rows older than the retention. Timestamps are stored as Unix seconds (double precision) so range
queries and purges compare numbers identically on every backend.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import StaticPool

from gpt_trader.core.clock import Clock, SystemClock
from gpt_trader.monitoring.alerts import AlertEvent

log = logging.getLogger(__name__)

metadata = sa.MetaData()

samples_table = sa.Table(
    "monitoring_metric_samples",
    metadata,
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("ts", sa.Double, nullable=False),  # Unix seconds, UTC
    sa.Column("value", sa.Double, nullable=False),
    # Canonical JSON (sorted keys), so equal label sets compare equal as strings.
    sa.Column("labels", sa.Text, nullable=False, default="{}"),
    sa.Index("ix_monitoring_metric_samples_name_ts", "name", "ts"),
    sa.Index("ix_monitoring_metric_samples_ts", "ts"),
)

alert_events_table = sa.Table(
    "monitoring_alert_events",
    metadata,
    sa.Column("ts", sa.Double, nullable=False),
    sa.Column("alert_id", sa.String(64), nullable=False),
    sa.Column("rule", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("severity", sa.String(20), nullable=False),
    sa.Column("value", sa.Double, nullable=True),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Index("ix_monitoring_alert_events_ts", "ts"),
)


@dataclass(frozen=True)
class MetricSample:
    """One stored sample."""

    name: str
    value: float
    ts: datetime
    labels: dict[str, str]


def _labels_json(labels: Mapping[str, str] | None) -> str:
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":")) if labels else "{}"


def create_history_engine(url: str | None) -> Engine:
    """An engine for `url`: None is a private in-memory SQLite database; `postgresql://` uses psycopg 3."""
    if url is None:
        # One shared connection, or every pooled connection would see its own empty in-memory database.
        return sa.create_engine(
            "sqlite+pysqlite:///:memory:", poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3 is what the project installs
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return sa.create_engine(parsed, pool_pre_ping=True)


class MetricHistory:
    """Buffered, batched, retention-bounded history of metric samples and alert events."""

    def __init__(
        self,
        url: str | None = None,
        *,
        retention_hours: float = 168,
        clock: Clock | None = None,
        batch_size: int = 1_000,
        flush_interval_secs: float = 1.0,
        max_buffer: int = 200_000,
        purge_interval_secs: float = 600.0,
        on_drop: Callable[[int], None] | None = None,
        on_purge: Callable[[int], None] | None = None,
    ) -> None:
        self.retention = timedelta(hours=retention_hours)
        self.clock: Clock = clock or SystemClock()
        self.batch_size = batch_size
        self.flush_interval_secs = flush_interval_secs
        self.max_buffer = max_buffer
        self.purge_interval_secs = purge_interval_secs
        self._on_drop, self._on_purge = on_drop, on_purge
        self.engine = create_history_engine(url)
        metadata.create_all(self.engine)
        self._buffer: list[tuple[str, float, float, Mapping[str, str] | None]] = []
        self._events: list[dict[str, Any]] = []
        self._buffer_lock = threading.Lock()
        # Serialises database work: the in-memory engine shares one connection between threads.
        self._db_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0

    # -- writing -------------------------------------------------------------------------------------------------

    def append(self, name: str, value: float, ts: float, labels: Mapping[str, str] | None = None) -> bool:
        """Buffer one sample (`ts` in Unix seconds); False if the buffer is full and the sample was dropped."""
        with self._buffer_lock:
            if len(self._buffer) >= self.max_buffer:
                self.dropped += 1
                dropped = True
            else:
                self._buffer.append((name, value, ts, labels))
                dropped = False
                if len(self._buffer) == self.batch_size:
                    self._wake.set()
        if dropped and self._on_drop is not None:
            self._on_drop(1)
        return not dropped

    def append_alert_event(self, event: AlertEvent) -> None:
        """Buffer an alert lifecycle event (alerts are rare, so no bound is needed here)."""
        a = event.alert
        row = {
            "ts": event.at.timestamp(),
            "alert_id": a.id,
            "rule": a.rule,
            "kind": event.kind,
            "severity": a.severity.value,
            "value": a.last_value,
            "labels": _labels_json(a.labels),
            "message": a.message,
        }
        with self._buffer_lock:
            self._events.append(row)

    def flush(self) -> int:
        """Write everything buffered in batched INSERTs; return the number of samples written."""
        with self._buffer_lock:
            buffer, self._buffer = self._buffer, []
            events, self._events = self._events, []
        if not buffer and not events:
            return 0
        # JSON-encode here, on the writer, to keep `append` cheap.
        rows = [{"name": n, "value": v, "ts": t, "labels": _labels_json(lab)} for n, v, t, lab in buffer]
        try:
            with self._db_lock, self.engine.begin() as conn:
                for start in range(0, len(rows), self.batch_size):
                    conn.execute(samples_table.insert(), rows[start : start + self.batch_size])
                if events:
                    conn.execute(alert_events_table.insert(), events)
        except Exception:
            self._requeue(buffer, events)
            raise
        return len(rows)

    def _requeue(
        self, buffer: list[tuple[str, float, float, Mapping[str, str] | None]], events: list[dict[str, Any]]
    ) -> None:
        # The transaction rolled back: put the rows back in front so the next flush retries them, within the bound.
        with self._buffer_lock:
            merged = buffer + self._buffer
            overflow = max(0, len(merged) - self.max_buffer)
            self._buffer = merged[overflow:]
            self._events = events + self._events
            self.dropped += overflow
        if overflow and self._on_drop is not None:
            self._on_drop(overflow)

    def purge(self, now: datetime | None = None) -> int:
        """Delete samples and alert events older than the retention; return the number of sample rows deleted."""
        cutoff = ((now or self.clock.now()) - self.retention).timestamp()
        self.flush()  # buffered samples may already be past retention
        with self._db_lock, self.engine.begin() as conn:
            deleted = conn.execute(samples_table.delete().where(samples_table.c.ts < cutoff)).rowcount
            conn.execute(alert_events_table.delete().where(alert_events_table.c.ts < cutoff))
        if deleted and self._on_purge is not None:
            self._on_purge(deleted)
        return int(deleted)

    # -- reading -------------------------------------------------------------------------------------------------

    def query(
        self,
        name: str,
        start: datetime | None = None,
        end: datetime | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
    ) -> list[MetricSample]:
        """Samples of `name` with start <= ts <= end (oldest first), optionally with exactly these labels.

        Flushes first so a caller reads its own writes.
        """
        self.flush()
        t = samples_table
        stmt = sa.select(t.c.name, t.c.value, t.c.ts, t.c.labels).where(t.c.name == name)
        if start is not None:
            stmt = stmt.where(t.c.ts >= start.timestamp())
        if end is not None:
            stmt = stmt.where(t.c.ts <= end.timestamp())
        if labels is not None:
            stmt = stmt.where(t.c.labels == _labels_json(labels))
        stmt = stmt.order_by(t.c.ts)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._db_lock, self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [MetricSample(r.name, r.value, datetime.fromtimestamp(r.ts, UTC), json.loads(r.labels)) for r in rows]

    def names(self) -> list[str]:
        """Distinct metric names stored."""
        self.flush()
        with self._db_lock, self.engine.connect() as conn:
            return sorted(conn.execute(sa.select(samples_table.c.name).distinct()).scalars())

    def alert_events(self, start: datetime | None = None, rule: str | None = None) -> list[dict[str, Any]]:
        """Stored alert lifecycle events (oldest first), optionally since `start` and for one rule."""
        self.flush()
        t = alert_events_table
        stmt = sa.select(t).order_by(t.c.ts)
        if start is not None:
            stmt = stmt.where(t.c.ts >= start.timestamp())
        if rule is not None:
            stmt = stmt.where(t.c.rule == rule)
        with self._db_lock, self.engine.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [{**r, "ts": datetime.fromtimestamp(r["ts"], UTC), "labels": json.loads(r["labels"])} for r in rows]

    # -- background writer ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (flush + periodic purge)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="monitoring-history", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_purge = 0.0
        elapsed = 0.0
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_secs)
            self._wake.clear()
            try:
                self.flush()
                elapsed += self.flush_interval_secs
                if elapsed >= next_purge:
                    self.purge()
                    next_purge = elapsed + self.purge_interval_secs
            except Exception:  # a database hiccup must not kill the writer; the next flush retries
                log.exception("metric history write failed")

    def stop(self) -> None:
        """Stop the writer and flush what is left."""
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout=10)
            self._thread = None
        try:
            self.flush()
        except Exception:
            log.exception("final metric history flush failed")

    def close(self) -> None:
        """Stop and release the database connections."""
        self.stop()
        self.engine.dispose()
