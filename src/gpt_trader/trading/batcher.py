"""Groups streamed final bars by timestamp so the session decides once per timestamp for all symbols.

Bars of one timestamp arrive one by one (one per symbol, as each symbol's window closes). A timestamp is released
as soon as every expected symbol has its bar there; earlier if any symbol already sent a later bar (the missing
ones are not coming for it), or once it has waited `max_wait_secs` (a symbol with no trades in the window has no
bar at all: it must not hold the others back).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime

from gpt_trader.core.types import Bar


class BarBatcher:
    """Collects bars per timestamp; `ready()` returns the complete (or given-up-on) batches, oldest first."""

    def __init__(
        self, symbols: Iterable[str], max_wait_secs: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.expected = frozenset(symbols)
        if not self.expected:
            raise ValueError("BarBatcher needs at least one symbol")
        self.max_wait_secs = max_wait_secs
        self._now = monotonic
        self._pending: dict[datetime, dict[str, Bar]] = {}
        self._first_seen: dict[datetime, float] = {}
        self._latest: dict[str, datetime] = {}

    def add(self, bar: Bar) -> None:
        """Queue one final bar (a repeat of a symbol's bar at the same timestamp replaces it)."""
        group = self._pending.setdefault(bar.ts, {})
        self._first_seen.setdefault(bar.ts, self._now())
        group[bar.symbol] = bar
        self._latest[bar.symbol] = max(bar.ts, self._latest.get(bar.symbol, bar.ts))

    def ready(self) -> list[list[Bar]]:
        """Batches that can be decided now, in timestamp order."""
        out: list[list[Bar]] = []
        now = self._now()
        for ts in sorted(self._pending):
            group = self._pending[ts]
            complete = self.expected <= group.keys()
            overtaken = any(latest > ts for latest in self._latest.values())
            waited = now - self._first_seen[ts] >= self.max_wait_secs
            if not (complete or overtaken or waited):
                break  # later timestamps wait behind this one: decisions stay in time order
            out.append(list(group.values()))
            del self._pending[ts], self._first_seen[ts]
        return out

    def flush(self) -> list[list[Bar]]:
        """Every pending batch, complete or not (end of the stream)."""
        out = [list(self._pending[ts].values()) for ts in sorted(self._pending)]
        self._pending.clear()
        self._first_seen.clear()
        return out

    def __len__(self) -> int:
        return sum(len(g) for g in self._pending.values())
