"""Per-symbol circular buffers (numpy columns): memory is fixed at construction whatever the input rate.

The overflow policy is explicit: `overwrite` keeps the newest `capacity` events (the live view's choice),
`drop_newest` keeps the oldest and refuses new ones, `raise` fails loudly. Every policy counts what it did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

OverflowPolicy = Literal["overwrite", "drop_newest", "raise"]
KIND_TRADE = 0
KIND_QUOTE = 1
COLUMNS: dict[str, str] = {
    "ts_event": "i8",
    "ts_init": "i8",
    "ts_corrected": "i8",  # ts_event moved onto our clock by the source's estimated offset
    "price": "f8",
    "size": "f8",
    "bid": "f8",
    "ask": "f8",
    "bid_size": "f8",
    "ask_size": "f8",
    "kind": "u1",
}


_STAGE_ROWS = 256
_WIDTH = len(COLUMNS)


def _first(v: Any) -> Any:
    return v[0] if isinstance(v, list | np.ndarray) else v


class BufferOverflowError(RuntimeError):
    """A `raise`-policy buffer is full."""


@dataclass
class BufferCounters:
    """What a buffer did: accepted writes, events overwritten (lost from the view), events refused."""

    written: int = 0
    overwritten: int = 0
    dropped: int = 0


class TickRing:
    """Fixed-capacity ring of ticks and quotes in columns; `snapshot()` returns them oldest first."""

    def __init__(self, capacity: int, policy: OverflowPolicy = "overwrite") -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        if policy not in ("overwrite", "drop_newest", "raise"):
            raise ValueError(f"unknown overflow policy {policy!r}")
        self.capacity = capacity
        self.policy: OverflowPolicy = policy
        self._columns: dict[str, npt.NDArray[np.generic]] = {
            name: np.zeros(capacity, dtype=dtype) for name, dtype in COLUMNS.items()
        }
        self._head = 0  # next write position
        self._size = 0
        self.counters = BufferCounters()
        # Single-event writes (one trade per frame) are staged as rows and stored into the columns in one batch:
        # a numpy scalar store per column costs more than the whole row append. Every read goes through
        # `columns`, which stores them first; positions and counters are settled at write time, as before.
        self._staged: list[Any] = []
        self._staged_at = 0  # ring position of the first staged row
        self._stage_limit = min(_STAGE_ROWS, capacity) * _WIDTH

    def __len__(self) -> int:
        return self._size

    @property
    def columns(self) -> dict[str, npt.NDArray[np.generic]]:
        """The column arrays (ring order, not time order), with every write stored."""
        if self._staged:
            self._store_staged()
        return self._columns

    @property
    def nbytes(self) -> int:
        """Memory held by the columns (constant)."""
        return sum(col.nbytes for col in self._columns.values())

    def _store_staged(self) -> None:
        flat, self._staged = self._staged, []  # rows back to back, `_WIDTH` values each
        start, k = self._staged_at, len(flat) // _WIDTH
        where: Any = (
            slice(start, start + k) if start + k <= self.capacity else np.arange(start, start + k) % self.capacity
        )
        for j, col in enumerate(self._columns.values()):
            col[where] = flat[j::_WIDTH]

    def write_row(self, *row: Any) -> int:
        """Append one event given as its column values in `COLUMNS` order; returns how many were stored (0/1)."""
        if len(row) != _WIDTH:
            raise ValueError(f"a row has {_WIDTH} values ({', '.join(COLUMNS)}), got {len(row)}")
        cap = self.capacity
        if self._size == cap and self.policy != "overwrite":
            if self.policy == "raise":
                raise BufferOverflowError(f"buffer full ({cap} events); 1 more refused")
            self.counters.dropped += 1
            return 0
        staged = self._staged
        if not staged:
            self._staged_at = self._head
        staged.extend(row)
        self.counters.overwritten += self._size == cap
        self._head = (self._head + 1) % cap
        if self._size < cap:
            self._size += 1
        self.counters.written += 1
        if len(staged) >= self._stage_limit:
            self._store_staged()
        return 1

    def write_rows(
        self,
        ts_event: list[int],
        ts_init: int,
        ts_corrected: list[int],
        price: list[float],
        size: list[float],
        bid: float,
        ask: float,
        bid_size: float,
        ask_size: float,
        kind: int,
    ) -> int:
        """`write_row` for each of a few trades in turn (the same stores, positions and counters), staged in one
        go: a handful of trades (a run of one-trade frames) costs less as rows than as ten numpy slice stores.
        Only the `overwrite` policy stages a block; the others go row by row, which decides each refusal."""
        n = len(ts_event)
        block_len = n * _WIDTH
        if self.policy != "overwrite" or block_len > self._stage_limit:
            stored = 0
            for t, c, p, s in zip(ts_event, ts_corrected, price, size, strict=True):
                stored += self.write_row(t, ts_init, c, p, s, bid, ask, bid_size, ask_size, kind)
            return stored
        if not n:
            return 0
        staged = self._staged
        if len(staged) + block_len > self._stage_limit:  # staged rows must not wrap onto each other
            self._store_staged()
            staged = self._staged
        if not staged:
            self._staged_at = self._head
        block = [0, ts_init, 0, 0.0, 0.0, bid, ask, bid_size, ask_size, kind] * n  # `COLUMNS` order
        block[0::_WIDTH] = ts_event
        block[2::_WIDTH] = ts_corrected
        block[3::_WIDTH] = price
        block[4::_WIDTH] = size
        staged.extend(block)
        cap = self.capacity
        self.counters.overwritten += max(0, self._size + n - cap)
        self._head = (self._head + n) % cap
        self._size = min(cap, self._size + n)
        self.counters.written += n
        if len(staged) >= self._stage_limit:
            self._store_staged()
        return n

    def write(self, n: int, values: dict[str, Any]) -> int:
        """Append `n` events given as arrays or scalars per column; returns how many were stored."""
        if n <= 0:
            return 0
        if n == 1:  # one event (Binance-style feeds): staged as a row
            return self.write_row(*[_first(values.get(name, 0)) for name in COLUMNS])
        if self._staged:
            self._store_staged()
        free = self.capacity - self._size
        if n > free and self.policy != "overwrite":
            if self.policy == "raise":
                raise BufferOverflowError(f"buffer full ({self.capacity} events); {n} more refused")
            self.counters.dropped += n - free
            if free == 0:
                return 0
            values = {k: (v[:free] if isinstance(v, np.ndarray | list) else v) for k, v in values.items()}
            n = free
        head, cap = self._head, self.capacity
        if n <= cap - head:  # the common case: one contiguous slice per column
            end = head + n
            for name, col in self._columns.items():
                col[head:end] = values.get(name, 0)
            self.counters.overwritten += max(0, self._size + n - cap)
            self._head = end % cap
            self._size = min(cap, self._size + n)
            self.counters.written += n
            return n
        skip = 0
        if n > cap:  # only the newest `capacity` can survive
            skip = n - cap
            self.counters.overwritten += skip
        m = n - skip
        first = min(m, cap - head)
        for name, col in self._columns.items():
            v = values.get(name, 0)
            if isinstance(v, np.ndarray | list):
                arr = np.asarray(v)[skip:]
                col[head : head + first] = arr[:first]
                if m > first:
                    col[: m - first] = arr[first:]
            else:
                col[head : head + first] = v
                if m > first:
                    col[: m - first] = v
        self.counters.overwritten += max(0, self._size + m - cap)
        self._head = (head + m) % cap
        self._size = min(cap, self._size + m)
        self.counters.written += m
        return m

    def snapshot(self, last: int | None = None) -> dict[str, npt.NDArray[np.generic]]:
        """Copies of the newest `last` events (all by default), oldest first."""
        columns = self.columns
        k = self._size if last is None else max(0, min(last, self._size))
        start = (self._head - k) % self.capacity
        idx = (start + np.arange(k)) % self.capacity
        return {name: col[idx] for name, col in columns.items()}
