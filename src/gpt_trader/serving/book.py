"""The live feature book: per symbol, the last `capacity` bars and their feature vectors as numpy rows.

Models read it in two ways: the fast scorers take contiguous numpy slices (`vectors`, `ts`), with no data frame
built on the bar path; any other pyfunc gets `frame()`, the same pandas frame (naive-UTC `ts`, calendar columns as
integers) the offline pipeline feeds models, so a model's MLflow signature accepts it.

Each symbol's rows live in an array of twice the capacity: appends write at the end and, when it is full, the last
`capacity - 1` rows move to the front (amortized O(1) per bar), so the newest rows are always one contiguous view.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from gpt_trader.core.types import Bar
from gpt_trader.data.features import CALENDAR_COLUMNS

BAR_FIELDS = ("open", "high", "low", "close", "volume")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _SymbolRows:
    __slots__ = ("bars", "n", "source", "total", "ts", "vectors")

    def __init__(self, capacity: int, n_features: int) -> None:
        self.ts = np.zeros(2 * capacity, dtype=np.int64)
        self.bars = np.zeros((2 * capacity, len(BAR_FIELDS)), dtype=np.float64)
        self.vectors = np.zeros((2 * capacity, n_features), dtype=np.float64)
        self.n = 0  # rows in use, at the start of the arrays
        self.total = 0  # rows ever appended
        self.source = ""


class FeatureBook:
    """The recent feature rows of every streamed symbol, oldest first."""

    def __init__(self, columns: Sequence[str], capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.columns = tuple(columns)
        self.capacity = capacity
        self.index = {c: i for i, c in enumerate(self.columns)}
        self._calendar = [self.index[c] for c in CALENDAR_COLUMNS if c in self.index]
        self._rows: dict[str, _SymbolRows] = {}

    def append(self, bar: Bar, vector: npt.NDArray[np.float64]) -> None:
        """Add `bar` and its feature vector (in `columns` order) as the symbol's newest row."""
        rows = self._rows.get(bar.symbol)
        if rows is None:
            rows = self._rows[bar.symbol] = _SymbolRows(self.capacity, len(self.columns))
        if rows.n == len(rows.ts):
            keep = self.capacity - 1
            for arr in (rows.ts, rows.bars, rows.vectors):
                arr[:keep] = arr[rows.n - keep : rows.n]
            rows.n = keep
        i = rows.n
        rows.ts[i] = _ns(bar)
        rows.bars[i] = (bar.open, bar.high, bar.low, bar.close, bar.volume)
        rows.vectors[i] = vector
        rows.n += 1
        rows.total += 1
        rows.source = bar.source

    @property
    def symbols(self) -> list[str]:
        """Symbols with at least one row, in first-seen order."""
        return list(self._rows)

    def __bool__(self) -> bool:
        return bool(self._rows)

    def size(self, symbol: str) -> int:
        """Rows held for `symbol` (at most `capacity`)."""
        rows = self._rows.get(symbol)
        return min(rows.n, self.capacity) if rows is not None else 0

    def total(self, symbol: str) -> int:
        """Rows ever appended for `symbol` (a counter that scorers use to know what they have not seen)."""
        rows = self._rows.get(symbol)
        return rows.total if rows is not None else 0

    def totals(self, symbols: Sequence[str]) -> list[int]:
        """`total` of each of `symbols` (0 for one never seen), in one call for a whole timestamp."""
        get = self._rows.get
        return [rows.total if (rows := get(s)) is not None else 0 for s in symbols]

    def latest(self, symbols: Sequence[str]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The newest feature row (N, F) and OHLCV row (N, 5) of each of `symbols` (each must have a row), as new
        arrays: the many-symbol bar path's one gather instead of a view per symbol."""
        vectors = np.empty((len(symbols), len(self.columns)), dtype=np.float64)
        bars = np.empty((len(symbols), len(BAR_FIELDS)), dtype=np.float64)
        for i, symbol in enumerate(symbols):
            rows = self._rows[symbol]
            vectors[i] = rows.vectors[rows.n - 1]
            bars[i] = rows.bars[rows.n - 1]
        return vectors, bars

    def _tail(self, symbol: str, n: int | None) -> tuple[_SymbolRows, slice]:
        rows = self._rows[symbol]
        k = min(rows.n, self.capacity) if n is None else min(n, rows.n, self.capacity)
        return rows, slice(rows.n - k, rows.n)

    def vectors(self, symbol: str, n: int | None = None) -> npt.NDArray[np.float64]:
        """The last `n` (default: all held) feature rows of `symbol`, a read-only view (k, F)."""
        rows, s = self._tail(symbol, n)
        view = rows.vectors[s]
        view.flags.writeable = False
        return view

    def ts(self, symbol: str, n: int | None = None) -> npt.NDArray[np.int64]:
        """Bar timestamps (ns since the epoch, UTC) of the last `n` rows."""
        rows, s = self._tail(symbol, n)
        return rows.ts[s]

    def bars(self, symbol: str, n: int | None = None) -> npt.NDArray[np.float64]:
        """OHLCV of the last `n` rows, columns in `BAR_FIELDS` order."""
        rows, s = self._tail(symbol, n)
        return rows.bars[s]

    def last(self, symbol: str, column: str) -> float | None:
        """The newest value of a feature column (None when the symbol has no row)."""
        rows = self._rows.get(symbol)
        if rows is None or rows.n == 0:
            return None
        return float(rows.vectors[rows.n - 1, self.index[column]])

    def frame(self, symbols: Iterable[str] | None = None) -> Any:
        """A pandas frame of the held rows (all symbols by default): ts (naive UTC), symbol, source, OHLCV,
        features; calendar columns as int64 as offline."""
        import pandas as pd

        chosen = [s for s in (self.symbols if symbols is None else symbols) if s in self._rows]
        if not chosen:
            return pd.DataFrame(columns=["ts", "symbol", "source", *BAR_FIELDS, *self.columns])
        parts = []
        for symbol in chosen:
            rows, s = self._tail(symbol, None)
            part: dict[str, Any] = {
                "ts": pd.to_datetime(rows.ts[s], unit="ns"),
                "symbol": symbol,
                "source": rows.source,
            }
            part.update(zip(BAR_FIELDS, rows.bars[s].T, strict=True))
            part.update(zip(self.columns, rows.vectors[s].T, strict=True))
            parts.append(pd.DataFrame(part))
        frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        for i in self._calendar:
            frame[self.columns[i]] = frame[self.columns[i]].astype(np.int64)
        return frame


def _ns(bar: Bar) -> int:
    # datetime.timestamp() goes through a float and can be off by a microsecond; integer arithmetic is exact.
    delta = bar.ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
