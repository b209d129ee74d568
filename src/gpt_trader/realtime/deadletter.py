"""Dead letters: every refused message or tick is counted by source and reason and kept (bounded) with its raw
text, so bad input is visible and replayable but never reaches a bar."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One refused input: where it came from, why, and what it was."""

    source: str
    reason: str
    detail: str
    raw: str
    wall_ns: int

    def to_fields(self) -> dict[str, str]:
        """Flat fields for the dead-letter bus stream."""
        return {
            "source": self.source,
            "reason": self.reason,
            "detail": self.detail[:512],
            "raw": self.raw,
            "ts": str(self.wall_ns),
        }


class DeadLetters:
    """Counters by (source, reason) plus the most recent `capacity` letters."""

    def __init__(self, capacity: int = 1000) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.recent: deque[DeadLetter] = deque(maxlen=capacity)

    def add(self, source: str, reason: str, detail: str, raw: str, wall_ns: int) -> DeadLetter:
        """Record one refused input and return it (the caller publishes it)."""
        letter = DeadLetter(source, reason, detail, raw, wall_ns)
        self.counts[(source, reason)] += 1
        self.recent.append(letter)
        return letter

    @property
    def total(self) -> int:
        """All dead letters so far."""
        return sum(self.counts.values())

    def by_reason(self) -> dict[str, int]:
        """Totals per reason over all sources."""
        out: Counter[str] = Counter()
        for (_, reason), n in self.counts.items():
            out[reason] += n
        return dict(out)


def tick_raw(symbol: str, ts: int, price: float, size: float, trade_id: object) -> str:
    """A refused tick as JSON text (ticks are columnar by then; this rebuilds the one that was refused)."""
    return orjson.dumps(
        {"symbol": symbol, "ts": ts, "price": price, "size": size, "id": repr(trade_id)},
        option=orjson.OPT_SERIALIZE_NUMPY,
    ).decode()
