"""Transactional state on SQLite, including a real kill -9 mid-run and restart."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from gpt_trader.trading.errors import StateError
from gpt_trader.trading.portfolio import Portfolio
from gpt_trader.trading.state import BarUpdate, StateStore
from gpt_trader.trading.types import BrokerOrder, Fill, Order, OrderStatus, Side

D = Decimal
T0 = datetime(2024, 1, 2, 15, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[3]


def sample_fill(n: int = 1) -> Fill:
    return Fill(f"paper-c{n}-1", f"paper-c{n}", f"c{n}", "AAPL", Side.BUY, D("1.5"), D("100.0125"), D("0.015"), T0)


def roundtrip(url: str) -> None:
    store = StateStore(url, strategy="s1")
    book = Portfolio(D(10_000))
    fill = sample_fill()
    book.apply_fill(fill)
    book.mark("AAPL", D("101.5"))
    placed = BrokerOrder(Order("c2", "AAPL", Side.SELL, D("0.5"), T0), "paper-c2", OrderStatus.NEW, submitted_at=T0)
    store.commit_bar(BarUpdate("AAPL", T0, book, (fill,), (placed,), book.record_equity(T0)))
    saved = StateStore(url, strategy="s1").load(D(10_000))
    assert saved.portfolio.cash == book.cash == D("9849.96625")
    assert saved.portfolio.positions == book.positions
    assert saved.portfolio.equity() == book.equity()
    assert saved.portfolio.has_fill(fill.fill_id)
    assert saved.open_orders == [placed]
    assert saved.last_bars == {"AAPL": T0}
    assert [p.equity for p in saved.portfolio.equity_curve] == [book.equity()]
    assert store.fills() == [fill]
    # Same bar again: refused; a fill booked twice: refused, and nothing of that bar is written.
    with pytest.raises(StateError, match="not after the last committed bar"):
        store.commit_bar(BarUpdate("AAPL", T0, book))
    with pytest.raises(StateError, match="already booked"):
        store.commit_bar(BarUpdate("AAPL", T0 + timedelta(minutes=1), book, (fill,)))
    assert store.last_bar("AAPL") == T0
    # Many symbols in one commit (one statement per table): rows new and existing, an order's later state, the
    # equity point of the timestamp and the model state replaced; a fill twice within the commit is refused.
    t1 = T0 + timedelta(days=1)
    fill2 = sample_fill(2)
    with pytest.raises(StateError, match="already booked"):
        store.commit_bars([BarUpdate("AAPL", t1, book, (fill2,)), BarUpdate("MSFT", t1, book, (fill2,))])
    filled = BrokerOrder(placed.order, "paper-c2", OrderStatus.FILLED, D("0.5"), D("101"), submitted_at=T0)
    fresh = BrokerOrder(Order("c3", "MSFT", Side.BUY, D(2), t1), "paper-c3", OrderStatus.NEW, submitted_at=t1)
    for version in ("1", "2"):
        day = t1 + timedelta(days=int(version) - 1)
        store.commit_bars(
            [
                BarUpdate("AAPL", day, book, (fill2,) if version == "1" else (), (filled,), book.record_equity(day)),
                BarUpdate("MSFT", day, book, (), (fresh, fresh) if version == "1" else (), book.record_equity(day)),
            ],
            {"rl": (version, {"MSFT": {"cash": float(version)}})},
        )
    saved = store.load(D(10_000))
    assert {o.client_order_id: o.status for o in saved.orders} == {"c2": OrderStatus.FILLED, "c3": OrderStatus.NEW}
    assert saved.last_bars == {"AAPL": t1 + timedelta(days=1), "MSFT": t1 + timedelta(days=1)}
    assert [p.ts for p in saved.portfolio.equity_curve] == [T0, t1, t1 + timedelta(days=1)]
    assert saved.model_states == {"rl": ("2", {"MSFT": {"cash": 2.0}})}
    assert [f.fill_id for f in store.fills()] == [fill.fill_id, fill2.fill_id]
    # Another strategy in the same database is independent.
    assert StateStore(url, strategy="other").load(D(5)).portfolio.cash == D(5)
    # Clearing one strategy forgets its book, orders, fills and progress, and nothing of another's.
    other = StateStore(url, strategy="other")
    other.commit_bar(BarUpdate("MSFT", T0, Portfolio(D(5)), equity=Portfolio(D(5)).record_equity(T0)))
    store.clear()
    cleared = store.load(D(10_000))
    assert cleared.portfolio.cash == D(10_000)
    assert cleared.portfolio.positions == {}
    assert cleared.orders == []
    assert cleared.last_bars == {}
    assert cleared.portfolio.equity_curve == []
    assert store.fills() == []
    assert other.load(D(5)).last_bars == {"MSFT": T0}
    other.close()
    store.close()


def test_state_store_roundtrip_sqlite(tmp_path: Path):
    roundtrip(f"sqlite:///{tmp_path / 'state.db'}")


def run_script(url: str, bars: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.trading_crash_run", url, "--bars", str(bars)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def snapshot(url: str) -> tuple:
    store = StateStore(url, strategy="crash")
    saved = store.load(D(100_000))
    book = saved.portfolio
    fills = [(f.fill_id, f.side, f.quantity, f.price, f.commission, f.ts) for f in store.fills()]
    curve = [(p.ts, p.equity) for p in book.equity_curve]
    out = (fills, book.positions, book.cash, book.realized_pnl, book.commissions, curve, saved.orders)
    store.close()
    return out


def kill_and_resume(url: str, bars: int, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    for stop_at in sorted(rng.sample(range(5, bars - 5), kills)):
        proc = run_script(url, bars)
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("bar ") and int(line.split()[1]) >= stop_at:
                break
        # A bar takes a few milliseconds: a random pause lands the kill anywhere in the next one, commit included.
        time.sleep(rng.uniform(0, 0.008))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    proc = run_script(url, bars)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip().endswith("done")


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on tmpfs when there is one: kill -9 tests process death, not power loss, so fsync is moot."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=shm, prefix="gpt_trader_state_") as d:
        yield Path(d)


def test_state_kill9_midrun_then_restart_equals_uninterrupted_run(state_dir: Path):
    bars = 120
    clean = f"sqlite:///{state_dir / 'clean.db'}"
    proc = run_script(clean, bars)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    crashed = f"sqlite:///{state_dir / 'crashed.db'}"
    kill_and_resume(crashed, bars, kills=2, seed=20240102)
    expected, got = snapshot(clean), snapshot(crashed)
    assert len(expected[0]) > 50  # the run really traded
    assert len({f[0] for f in got[0]}) == len(got[0])  # no fill booked twice
    assert got == expected  # same fills, positions, cash (exactly), P&L, equity curve and orders
