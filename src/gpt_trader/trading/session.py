"""The live trading session: one code path from a closed bar to an order, for paper and live brokers alike.

Per final bar of a symbol, in this order:
1. fill orders decided on the previous bar at this bar's open (the first price after the decision),
2. mark the book at the close and update the incremental features,
3. score the champion models (and the challenger in shadow), combine them into a target,
4. run the risk checks (kill-switch, market-condition state, stale data, limits) and submit the order,
5. commit fills, orders, the book, the equity point and the bar id in one transaction.

A restart loads the committed state, restores the broker's book, skips bars already processed, and so never fills
twice or loses a position. Models are hot-swapped between bars when the registry alias moves.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import numpy as np

from gpt_trader.core.clock import Clock, SimClock
from gpt_trader.core.types import Bar
from gpt_trader.data.config import FeaturesConfig
from gpt_trader.data.features import CALENDAR_COLUMNS
from gpt_trader.serving.champion import ChampionSlot
from gpt_trader.serving.features import LiveFeatures
from gpt_trader.trading.config import TradingConfig
from gpt_trader.trading.costs import CostModel
from gpt_trader.trading.execution import Broker, PaperBroker, make_client_order_id
from gpt_trader.trading.portfolio import Portfolio
from gpt_trader.trading.reconcile import reconcile
from gpt_trader.trading.risk import RiskManager
from gpt_trader.trading.signals import RLOutput, TransformerOutput, combine_signals
from gpt_trader.trading.sizing import cap_to_trade_limits, order_quantity
from gpt_trader.trading.state import BarUpdate, StateStore
from gpt_trader.trading.types import BrokerOrder, Fill, Order, Side, Signal, TradingState, to_decimal

log = logging.getLogger(__name__)

AlertHook = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class ModelCall:
    """One model's view of a symbol at a bar, with how long it took."""

    model: str
    version: str
    target: float
    confidence: float
    latency_ms: float
    transformer: TransformerOutput | None = None


@dataclass(slots=True)
class BarOutcome:
    """What processing one bar did."""

    symbol: str
    ts: datetime
    fills: list[Fill] = field(default_factory=list)
    signal: Signal | None = None
    orders: list[BrokerOrder] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)
    calls: list[ModelCall] = field(default_factory=list)
    # Bar in -> order out (features, models, risk, submit); the state commit is timed separately.
    decision_ms: float = 0.0
    commit_ms: float = 0.0


class ModelRunner:
    """Scores one registered model (via its `ChampionSlot`) on a feature window; knows the model's output format."""

    REQUIRED: ClassVar[dict[str, tuple[str, ...]]] = {"transformer": ("p_sell", "p_hold", "p_buy"), "rl": ("position",)}

    def __init__(self, slot: ChampionSlot, kind: str) -> None:
        if kind not in self.REQUIRED:
            raise ValueError(f"model kind must be 'transformer' or 'rl', got {kind!r}")
        self.slot, self.kind = slot, kind
        self._failed: set[str] = set()

    def check_output(self, out: Any) -> None:
        """Raise unless `out` has this kind's columns with finite values (a new champion must pass this)."""
        missing = [c for c in self.REQUIRED[self.kind] if c not in out.columns]
        if missing:
            raise ValueError(f"prediction lacks columns {missing}")
        values = out[list(self.REQUIRED[self.kind])].to_numpy(dtype=float)
        if len(out) and not np.isfinite(values).all():
            raise ValueError("prediction contains NaN or infinite values")

    def score(self, window: Any, symbol: str, on_error: AlertHook | None = None) -> ModelCall | None:
        """The model's target for `symbol` at the window's end; None when no model serves, it is expired, or it fails.

        `window` holds every streamed symbol (multi-asset models need them together). A failing prediction is
        reported once per model version and treated as no view, so one bad model never stops the session.
        """
        loaded = self.slot.current
        if loaded is None or self.slot.is_expired():
            return None
        start = time.perf_counter()
        try:
            out = loaded.model.predict(window)
        except Exception as exc:  # a model's failure must not stop trading the rest of the book
            key = f"{self.slot.name}/{loaded.version}"
            if on_error is not None and key not in self._failed:
                on_error("ERROR", f"{self.slot.name} v{loaded.version} failed to predict ({exc}); treated as flat")
            self._failed.add(key)
            return None
        latency = (time.perf_counter() - start) * 1000
        if "symbol" in out.columns:
            out = out[out["symbol"] == symbol]
        if len(out) == 0:
            return None
        row = out.iloc[-1]
        if self.kind == "transformer":
            p_sell, p_hold, p_buy = float(row["p_sell"]), float(row["p_hold"]), float(row["p_buy"])
            total = p_sell + p_hold + p_buy  # float32 softmax: renormalize so the sum-to-one check holds
            output = TransformerOutput(
                p_sell / total,
                p_hold / total,
                p_buy / total,
                float(row.get("expected_return", 0.0)),
                model_id=self.slot.name,
            )
            target = float(np.clip(row.get("position", p_buy - p_sell), -1, 1))
            return ModelCall(
                self.slot.name, loaded.version, target, max(p_sell, p_hold, p_buy) / total, latency, output
            )
        target = float(np.clip(row["position"], -1.0, 1.0))
        confidence = float(np.clip(row.get("confidence", 1.0), 0.0, 1.0))
        return ModelCall(self.slot.name, loaded.version, target, confidence, latency)


class LiveSession:
    """Bars in, orders out; the state of the book survives crashes through `StateStore`."""

    def __init__(
        self,
        *,
        trading: TradingConfig,
        features: FeaturesConfig,
        costs: CostModel,
        broker: Broker,
        store: StateStore,
        transformer: ModelRunner | None = None,
        rl: ModelRunner | None = None,
        shadow: list[ModelRunner] | None = None,
        monitor: Any | None = None,
        scaler: Any | None = None,
        clock: Clock | None = None,
        on_alert: AlertHook | None = None,
    ) -> None:
        self.trading, self.features_config, self.costs = trading, features, costs
        self.broker, self.store = broker, store
        self.transformer, self.rl = transformer, rl
        self.shadow = shadow or []
        self.monitor, self.scaler = monitor, scaler
        # Replays run on bar time: a SimClock that follows the bars keeps staleness and day boundaries honest.
        self.clock: Clock = clock or SimClock(datetime(1970, 1, 1, tzinfo=UTC))
        self._on_alert = on_alert or (lambda severity, message: log.warning("%s: %s", severity, message))
        self.risk = RiskManager(trading.risk, self.clock)
        self.features = LiveFeatures(features)
        self._rows: dict[str, deque[dict[str, Any]]] = {}
        self._shadow_books: dict[str, tuple[PaperBroker, Portfolio]] = {}
        self.portfolio = Portfolio(to_decimal(trading.execution.initial_cash_usd))
        self._last_bars: dict[str, datetime] = {}
        self._market_symbol = trading.live.market_symbol
        self._expired_alerted: set[str] = set()
        self.decision_ms: list[float] = []
        self.commit_ms: list[float] = []
        self.bars_processed = 0
        self.trade_count = 0
        self._day_index = -1  # into portfolio.equity_curve: the current day's first point
        for runner in (transformer, rl, *self.shadow):
            if runner is not None:
                runner.slot.set_probe(functools.partial(self._probe, runner))

    def _probe(self, runner: ModelRunner, model: Any) -> None:
        """Predict on the richest live window (else the model's logged input example) and check the output."""
        if any(self._rows.values()):
            sample = self._window()
        else:
            sample = getattr(model, "input_example", None)
            if sample is None:
                log.info("%s: no live window or input example yet; accepting without a probe", runner.slot.name)
                return
        runner.check_output(model.predict(sample))

    # --- start-up ----------------------------------------------------------------------------------------------
    def start(self, history: dict[str, list[Bar]] | None = None) -> None:
        """Load committed state, restore the broker, seed the risk baselines, load models, warm the features.

        `history` (oldest first, per symbol) must reach the last committed bar after a restart: feature state is
        not persisted, it is rebuilt from bars, so a resumed session decides exactly as an uninterrupted one.
        """
        saved = self.store.load(self.portfolio.initial_cash)
        self.portfolio = saved.portfolio
        self._last_bars = dict(saved.last_bars)
        if isinstance(self.broker, PaperBroker):
            # The paper broker's book is ours: restore it from the same committed state.
            self.broker.restore(
                orders=saved.orders, positions=list(self.portfolio.positions.values()), cash=self.portfolio.cash
            )
        else:
            # A real broker is the source of truth for what filled while we were down.
            fixed = reconcile(self.portfolio, self.broker, saved.orders)
            if not fixed.clean:
                self.store.save_orders(fixed.changed_orders)
                self.store.save_book(self.portfolio)
                details = "; ".join(str(d) for d in fixed.differences)
                self._on_alert(
                    "WARNING", f"start-up reconciliation fixed {len(fixed.differences)} difference(s): {details}"
                )
        curve = self.portfolio.equity_curve
        if curve:
            last = curve[-1]
            peak = max(p.equity for p in curve)
            self.risk.seed(peak_equity=peak, day_start_equity=self._day_first_equity(), day=last.ts.date())
            if isinstance(self.clock, SimClock) and last.ts > self.clock.now():
                self.clock.set(last.ts)
        self.refresh_models()
        for bars in (history or {}).values():
            for bar in bars:
                self._remember(bar, self.features.update(bar))

    def refresh_models(self) -> None:
        """Poll the registry for moved aliases; swaps happen here, between bars."""
        for runner in (self.transformer, self.rl, *self.shadow):
            if runner is not None:
                runner.slot.refresh()

    # --- the bar path ------------------------------------------------------------------------------------------
    def on_bar(self, bar: Bar, *, bar_length: timedelta | None = None) -> BarOutcome | None:
        """Process one final bar; bars at or before the last committed one for the symbol are skipped."""
        last = self._last_bars.get(bar.symbol)
        if last is not None and bar.ts <= last:
            return None
        started = time.perf_counter()
        if isinstance(self.clock, SimClock):
            now = bar.ts + (bar_length or timedelta(0))
            if now > self.clock.now():
                self.clock.set(now)
        self.risk.on_bar(bar.symbol, bar.ts + (bar_length or timedelta(0)))
        outcome = BarOutcome(bar.symbol, bar.ts)
        volume, sigma = bar.volume, self._sigma(bar.symbol)
        fills = (
            self.broker.on_price(bar.symbol, bar.open, bar.ts, volume=volume, sigma=sigma)
            if isinstance(self.broker, PaperBroker)
            else self.broker.poll_fills()
        )
        for fill in fills:
            if self.portfolio.apply_fill(fill):
                outcome.fills.append(fill)
                self.trade_count += 1
        changed = {f.client_order_id for f in outcome.fills}
        outcome.orders.extend(o for o in (self.broker.get_order(c) for c in changed) if o is not None)
        self.portfolio.mark(bar.symbol, to_decimal(bar.close))
        vector = self.features.update(bar)
        self._remember(bar, vector)
        self._update_market_condition(bar)
        self._shadow_step(bar, vector)

        kill = self.risk.check_limits(self.portfolio, client_order_prefix=f"kill-{bar.ts:%Y%m%d%H%M%S}")
        if kill is not None:
            self._on_alert("CRITICAL", f"kill-switch: {kill.message}; flattening and halting")
            for order in kill.flatten_orders:
                outcome.orders.append(self.broker.submit(order))
        elif vector is not None and self.risk.state is not TradingState.HALTED:
            self._decide(bar, outcome)

        # The decision ends here; the commit below is durability, timed on its own.
        outcome.decision_ms = (time.perf_counter() - started) * 1000
        committing = time.perf_counter()
        point = self.portfolio.record_equity(bar.ts)
        self.store.commit_bar(
            BarUpdate(bar.symbol, bar.ts, self.portfolio, tuple(outcome.fills), tuple(outcome.orders), point)
        )
        self._last_bars[bar.symbol] = bar.ts
        self.bars_processed += 1
        outcome.commit_ms = (time.perf_counter() - committing) * 1000
        self.decision_ms.append(outcome.decision_ms)
        self.commit_ms.append(outcome.commit_ms)
        self._record_metrics(outcome)
        return outcome

    def _decide(self, bar: Bar, outcome: BarOutcome) -> None:
        window = self._window()
        t_call = self.transformer.score(window, bar.symbol, self._on_alert) if self.transformer is not None else None
        r_call = self.rl.score(window, bar.symbol, self._on_alert) if self.rl is not None else None
        outcome.calls.extend(c for c in (t_call, r_call) if c is not None)
        self._alert_expired()
        rl_out = RLOutput(r_call.target, r_call.confidence, r_call.model) if r_call is not None else None
        signal = combine_signals(
            bar.symbol, bar.ts, t_call.transformer if t_call else None, rl_out, self.trading.signals
        )
        outcome.signal = signal
        price = to_decimal(bar.close)
        sizing = self.trading.sizing
        qty = order_quantity(
            signal.target,
            self.portfolio.quantity(bar.symbol),
            self.portfolio.equity(),
            price,
            lot_size=to_decimal(sizing.lot_size),
            max_position_fraction=self.trading.risk.max_position_fraction,
            min_order_notional=to_decimal(sizing.min_order_notional_usd),
        )
        risk = self.trading.risk
        qty = cap_to_trade_limits(
            qty,
            price,
            self.portfolio.equity(),
            max_order_notional=to_decimal(risk.max_order_notional_usd) * Decimal("0.999"),
            stop_loss_fraction=risk.stop_loss_fraction,
            max_loss_per_trade_fraction=risk.max_loss_per_trade_fraction * 0.999,
            lot_size=to_decimal(sizing.lot_size),
        )
        if qty == 0:
            return
        order = Order(
            make_client_order_id(self.trading.execution.strategy_id, bar.symbol, bar.ts),
            bar.symbol,
            Side.BUY if qty > 0 else Side.SELL,
            abs(qty),
            bar.ts,
        )
        decision = self.risk.check_order(order, self.portfolio, price)
        if not decision.approved:
            outcome.rejections.extend(f"{r.code.value}: {r.message}" for r in decision.rejections)
            log.info("risk rejected %s %s: %s", bar.symbol, order.side.value, "; ".join(outcome.rejections))
            return
        outcome.orders.append(self.broker.submit(order))

    # --- shadow, market condition, metrics ------------------------------------------------------------------
    def _shadow_step(self, bar: Bar, vector: np.ndarray | None) -> None:
        """Challengers trade a private paper book on the same bars; nothing reaches the real broker."""
        if not self.trading.live.shadow_challenger:
            return
        for runner in self.shadow:
            name = f"{runner.slot.name}@{runner.slot.alias}"
            broker, book = self._shadow_books.setdefault(
                name,
                (
                    PaperBroker(self.costs, initial_cash=self.portfolio.initial_cash),
                    Portfolio(self.portfolio.initial_cash),
                ),
            )
            for fill in broker.on_price(bar.symbol, bar.open, bar.ts, volume=bar.volume, sigma=self._sigma(bar.symbol)):
                book.apply_fill(fill)
            book.mark(bar.symbol, to_decimal(bar.close))
            if vector is None:
                continue
            call = runner.score(self._window(), bar.symbol, self._on_alert)
            if call is None:
                continue
            qty = order_quantity(
                call.target,
                book.quantity(bar.symbol),
                book.equity(),
                to_decimal(bar.close),
                lot_size=to_decimal(self.trading.sizing.lot_size),
            )
            if qty != 0:
                broker.submit(
                    Order(
                        make_client_order_id(f"shadow-{name}", bar.symbol, bar.ts),
                        bar.symbol,
                        Side.BUY if qty > 0 else Side.SELL,
                        abs(qty),
                        bar.ts,
                    )
                )

    def shadow_pnl(self) -> dict[str, Decimal]:
        """Would-be P&L of each shadow model's book."""
        return {name: book.total_pnl() for name, (_, book) in self._shadow_books.items()}

    def _update_market_condition(self, bar: Bar) -> None:
        if self.scaler is None:
            return
        if self._market_symbol is None:
            self._market_symbol = bar.symbol
        if bar.symbol != self._market_symbol:
            return
        decision = self.scaler.update_market_data(bar.close, bar.volume, ts=bar.ts)
        condition = decision.condition.name
        # An extreme market only allows risk-reducing orders; the kill-switch halt is never lifted from here.
        wanted = TradingState.REDUCING if condition == "EXTREME" else TradingState.ACTIVE
        if not self.risk.killed and self.risk.state is not wanted:
            self.risk.set_state(wanted, f"market condition {condition}")

    def _alert_expired(self) -> None:
        for runner in (self.transformer, self.rl):
            if runner is not None and runner.slot.is_expired() and runner.slot.name not in self._expired_alerted:
                self._expired_alerted.add(runner.slot.name)
                self._on_alert("WARNING", f"{runner.slot.name}: no fresh champion; its symbols go flat")

    def _day_first_equity(self) -> Decimal:
        """Equity at the first point of the latest point's day; the curve is chronological, so the search runs
        once per new day (scanning back from the end) instead of over the whole curve on every bar."""
        curve = self.portfolio.equity_curve
        day = curve[-1].ts.date()
        if not 0 <= self._day_index < len(curve) or curve[self._day_index].ts.date() != day:
            i = len(curve) - 1
            while i > 0 and curve[i - 1].ts.date() == day:
                i -= 1
            self._day_index = i
        return curve[self._day_index].equity

    def _record_metrics(self, outcome: BarOutcome) -> None:
        if self.monitor is None:
            return
        equity = float(self.portfolio.equity())
        self.monitor.record_trading_metrics(
            portfolio_value=equity,
            daily_pnl=equity - float(self._day_first_equity()),
            position_count=len(self.portfolio.positions),
            trade_count=self.trade_count,
        )
        for call in outcome.calls:
            self.monitor.record_prediction(call.model, call.latency_ms)

    # --- feature window --------------------------------------------------------------------------------------
    def _remember(self, bar: Bar, vector: np.ndarray | None) -> None:
        if vector is None:
            return
        rows = self._rows.setdefault(bar.symbol, deque(maxlen=self.trading.live.window_bars))
        row: dict[str, Any] = {
            "ts": bar.ts,
            "symbol": bar.symbol,
            "source": bar.source,
            "open": bar.open,
            "high": bar.high,
            "low": bar.low,
            "close": bar.close,
            "volume": bar.volume,
        }
        row.update(zip(self.features.columns, vector.tolist(), strict=True))
        # Calendar fields are integers offline; model signatures refuse them as floats.
        row.update({c: int(row[c]) for c in CALENDAR_COLUMNS})
        rows.append(row)

    def _window(self, symbol: str | None = None) -> Any:
        """The recent feature rows of `symbol`, or of every symbol (multi-asset models score them together)."""
        import pandas as pd

        rows = self._rows.get(symbol, ()) if symbol is not None else [r for rs in self._rows.values() for r in rs]
        frame = pd.DataFrame(list(rows))
        if len(frame):
            # Models were trained on naive-UTC pandas timestamps (MLflow signatures); keep the same dtype.
            frame["ts"] = pd.to_datetime(frame["ts"], utc=True).dt.tz_localize(None)
        return frame

    def _sigma(self, symbol: str) -> float:
        rows = self._rows.get(symbol)
        if not rows:
            return 0.0
        key = f"rvol_{min(self.features_config.volatility_windows)}"
        return float(rows[-1].get(key, 0.0))

    # --- reporting ---------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Figures for the terminal and the flow artifact."""
        book = self.portfolio
        lat = np.asarray(self.decision_ms) if self.decision_ms else np.zeros(1)
        commit = np.asarray(self.commit_ms) if self.commit_ms else np.zeros(1)
        return {
            "bars": self.bars_processed,
            "trades": self.trade_count,
            "equity": float(book.equity()),
            "cash": float(book.cash),
            "realized_pnl": float(book.realized_pnl),
            "unrealized_pnl": float(book.unrealized_pnl()),
            "commissions": float(book.commissions),
            "total_pnl": float(book.total_pnl()),
            "positions": {s: float(p.quantity) for s, p in book.positions.items()},
            "risk_state": self.risk.state.name,
            "decision_ms_p50": float(np.percentile(lat, 50)),
            "decision_ms_p99": float(np.percentile(lat, 99)),
            "commit_ms_p50": float(np.percentile(commit, 50)),
            "shadow_pnl": {k: float(v) for k, v in self.shadow_pnl().items()},
        }
