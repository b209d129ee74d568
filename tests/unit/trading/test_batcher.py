from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gpt_trader.core.types import Bar
from gpt_trader.trading.batcher import BarBatcher

T0 = datetime(2024, 1, 2, tzinfo=UTC)


def bar(symbol: str, day: int) -> Bar:
    return Bar(T0 + timedelta(days=day), symbol, "test", 1.0, 1.0, 1.0, 1.0, 10.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def symbols_of(batches: list[list[Bar]]) -> list[list[tuple[str, int]]]:
    return [sorted((b.symbol, (b.ts - T0).days) for b in batch) for batch in batches]


def test_batcher_releases_a_timestamp_once_every_symbol_has_its_bar():
    batcher = BarBatcher(["A", "B"], max_wait_secs=5.0, monotonic=Clock())
    batcher.add(bar("A", 0))
    assert batcher.ready() == []
    batcher.add(bar("B", 0))
    assert symbols_of(batcher.ready()) == [[("A", 0), ("B", 0)]]
    assert len(batcher) == 0


def test_batcher_gives_up_on_a_missing_symbol_when_overtaken_or_after_the_wait():
    clock = Clock()
    batcher = BarBatcher(["A", "B"], max_wait_secs=5.0, monotonic=clock)
    batcher.add(bar("A", 0))
    batcher.add(bar("A", 1))  # A moved on: B has no bar at day 0
    assert symbols_of(batcher.ready()) == [[("A", 0)]]
    clock.now = 4.9
    assert batcher.ready() == []
    clock.now = 5.0
    assert symbols_of(batcher.ready()) == [[("A", 1)]]


def test_batcher_keeps_time_order_and_flushes_the_rest():
    batcher = BarBatcher(["A", "B"], max_wait_secs=60.0, monotonic=Clock())
    batcher.add(bar("B", 1))
    batcher.add(bar("A", 0))
    batcher.add(bar("B", 0))
    assert symbols_of(batcher.ready()) == [[("A", 0), ("B", 0)]]  # day 1 still waits for A
    assert symbols_of(batcher.flush()) == [[("B", 1)]]
