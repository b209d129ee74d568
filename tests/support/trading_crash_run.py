"""Process a deterministic bar sequence with PaperBroker + StateStore, resuming from saved state; for the
kill -9 test. Prints `bar <i>` after each committed bar and `done` at the end.

    python -m tests.support.trading_crash_run sqlite:///state.db --bars 120
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from gpt_trader.core.types import Bar
from gpt_trader.trading.costs import CostModel
from gpt_trader.trading.execution import PaperBroker, make_client_order_id
from gpt_trader.trading.sizing import order_quantity
from gpt_trader.trading.state import BarUpdate, StateStore
from gpt_trader.trading.types import Order, Side, to_decimal

STRATEGY = "crash"
SYMBOL = "AAPL"
CASH = Decimal(100_000)
TARGETS = (0.0, 0.5, 1.0, -0.5, 0.25, -1.0, 0.75)


def make_bars(n: int) -> list[Bar]:
    """A deterministic price path (no RNG state to resume) with opens at the previous close."""
    start = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    bars, close = [], 100.0
    for i in range(n):
        step = ((i * 7919) % 23 - 11) / 1000.0
        open_, close = close, round(close * (1 + step), 4)
        bars.append(
            Bar(
                start + timedelta(minutes=i),
                SYMBOL,
                "sim",
                open_,
                max(open_, close),
                min(open_, close),
                close,
                20_000.0 + 37 * (i % 11),
            )
        )
    return bars


def target_at(i: int) -> float:
    return TARGETS[(i * 31) % len(TARGETS)]


def run(url: str, n_bars: int) -> None:
    store = StateStore(url, strategy=STRATEGY)
    saved = store.load(CASH)
    book = saved.portfolio
    broker = PaperBroker(CostModel(), initial_cash=CASH)
    broker.restore(orders=saved.orders, positions=list(book.positions.values()), cash=book.cash)
    last = saved.last_bars.get(SYMBOL)
    for i, bar in enumerate(make_bars(n_bars)):
        if last is not None and bar.ts <= last:
            continue
        fills = broker.on_price(SYMBOL, bar.open, bar.ts, volume=bar.volume, sigma=0.01)
        for fill in fills:
            book.apply_fill(fill)
        changed = [o for o in (broker.get_order(f.client_order_id) for f in fills) if o is not None]
        close = to_decimal(bar.close)
        book.mark(SYMBOL, close)
        qty = order_quantity(target_at(i), book.quantity(SYMBOL), book.equity(), close, lot_size=Decimal("0.001"))
        if qty != 0:
            order = Order(
                make_client_order_id(STRATEGY, SYMBOL, bar.ts),
                SYMBOL,
                Side.BUY if qty > 0 else Side.SELL,
                abs(qty),
                bar.ts,
            )
            changed.append(broker.submit(order))
        point = book.record_equity(bar.ts)
        store.commit_bar(BarUpdate(SYMBOL, bar.ts, book, tuple(fills), tuple(changed), point))
        print(f"bar {i}", flush=True)
    print("done", flush=True)
    store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--bars", type=int, default=120)
    args = parser.parse_args(argv)
    run(args.url, args.bars)
    return 0


if __name__ == "__main__":
    sys.exit(main())
