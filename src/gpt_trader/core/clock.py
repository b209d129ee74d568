"""Injected time: backtest, paper and live trading share one code path by swapping the clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol


def utc_midnight(day: date) -> datetime:
    """00:00 UTC of `day`: how daily bars are stamped and how date options become half-open bounds."""
    return datetime.combine(day, time.min, tzinfo=UTC)


class Clock(Protocol):
    """Source of the current UTC time."""

    def now(self) -> datetime:
        """Return the current time, timezone-aware UTC."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> datetime:
        """Return the machine's current UTC time."""
        return datetime.now(UTC)


class SimClock:
    """A clock that only moves when told to: for backtests, replays and tests."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError(f"SimClock needs a timezone-aware start, got naive {start!r}")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        """Return the simulated time."""
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        """Move forward by `delta` (never backwards) and return the new time."""
        if delta < timedelta(0):
            raise ValueError(f"SimClock cannot move backwards (delta={delta})")
        self._now += delta
        return self._now

    def set(self, when: datetime) -> datetime:
        """Jump to `when`, which must not be earlier than the current time."""
        when = when.astimezone(UTC)
        if when < self._now:
            raise ValueError(f"SimClock cannot move backwards from {self._now} to {when}")
        self._now = when
        return self._now
