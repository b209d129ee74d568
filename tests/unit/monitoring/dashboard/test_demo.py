"""The demo session behind `gpt-trader dashboard`: real components fed by bundled real bars."""

from __future__ import annotations

import time
from datetime import date

import pytest

from gpt_trader.core.errors import ConfigError
from gpt_trader.monitoring.dashboard.demo import CONDITION_MODEL, SIGNAL_MODEL, DemoSession

# Reading the bundled files imports `arch` (seconds), so these count as slow.
pytestmark = pytest.mark.slow


def test_demo_session_replay_trades_marks_and_fires_alerts() -> None:
    demo = DemoSession(("SPX", "IXIC"), start=date(2007, 1, 1), bars_per_sec=200)
    try:
        assert demo.run(400) == 400
        snap = demo.source().snapshot()
        assert len(demo.portfolio.equity_curve) == 400
        assert snap["equity_curve"][0][0] == pytest.approx(demo.portfolio.equity_curve[0].ts.timestamp() * 1000)
        assert demo.portfolio.commissions > 0  # it traded through the paper broker
        assert snap["pnl"]["equity"] == pytest.approx(float(demo.portfolio.equity()))
        assert {r["source"]: r["ticks_total"] for r in snap["pipeline"]} == {"bundled:IXIC": 400, "bundled:SPX": 400}
        assert {r["model"] for r in snap["models"]} == {SIGNAL_MODEL, CONDITION_MODEL}
        assert snap["scaling"]["updates"] > 400  # warm-up bars included
        assert snap["alerts"]["recent"]  # 2007-2008 trips the drawdown and volatility rules for real

        demo.start()  # the background replay keeps going
        before = demo.bars_replayed
        deadline = time.monotonic() + 10
        while demo.bars_replayed < before + 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert demo.bars_replayed >= before + 3
    finally:
        demo.stop()


def test_demo_session_unknown_symbol_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown bundled symbols"):
        DemoSession(("NOPE",))
