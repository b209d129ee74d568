"""The live trading session: one code path from a closed bar to an order, for paper and live brokers alike.

Per final bar of a symbol, in this order:
1. fill orders decided on the previous bar at this bar's open (the first price after the decision),
2. mark the book at the close and update the incremental features,
3. score the champion models, combine them into a target,
4. run the risk checks (kill-switch, market-condition state, stale data, limits) and submit the order,
5. score the challengers on their private shadow books (after the order: shadowing never delays it),
6. commit fills, orders, the book, the equity point and the bar id in one transaction.

A restart loads the committed state, restores the broker's book, skips bars already processed, and so never fills
twice or loses a position. Models are hot-swapped between bars when the registry alias moves; a new version that
fails to predict while serving hands the symbols back to the version it replaced within the same bar.

Stale data: a held symbol whose bars stopped (`RiskManager.stale_reason`: its last bar older than
`risk.max_bar_age_secs` of bar time and more than `risk.max_missed_bars` bar times behind the others) or whose
feed the data layer reports down (`set_feed_status`) goes flat (`live.stale_action`), its orders that would add
exposure are cancelled, an alert fires once per episode, and the risk manager refuses new exposure in it until
its data is fresh again.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from operator import attrgetter
from typing import Any

import numpy as np

from gpt_trader.core.clock import Clock, SimClock
from gpt_trader.core.types import Bar
from gpt_trader.data.config import FeaturesConfig
from gpt_trader.serving.book import FeatureBook
from gpt_trader.serving.champion import ChampionSlot
from gpt_trader.serving.features import LiveFeatures
from gpt_trader.serving.scorers import FrameScorer, ModelView, PolicyScorer, Scorer, scorer_for
from gpt_trader.trading.config import TradingConfig
from gpt_trader.trading.costs import CostModel
from gpt_trader.trading.execution import Broker, PaperBroker, make_client_order_id
from gpt_trader.trading.portfolio import Portfolio
from gpt_trader.trading.reconcile import reconcile
from gpt_trader.trading.risk import RiskManager, is_risk_reducing
from gpt_trader.trading.shadow import ShadowTracker
from gpt_trader.trading.signals import RLOutput, TransformerOutput, combine_signals
from gpt_trader.trading.sizing import cap_to_headroom, cap_to_trade_limits, order_quantity
from gpt_trader.trading.state import BarUpdate, StateStore
from gpt_trader.trading.types import BrokerOrder, Fill, Order, Side, Signal, TradingState, to_decimal

log = logging.getLogger(__name__)
# Bar timestamps whose decision/commit/shadow timings a session keeps (~2.4 MB; a week of 1 s bars is 600k).
LATENCY_WINDOW = 100_000

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
    # The deciding thread's CPU time for the same span: wall minus this is time the thread waited for a core.
    decision_cpu_ms: float = 0.0
    commit_ms: float = 0.0


class ModelRunner:
    """Serves one registered model (via its `ChampionSlot`): scores all symbols of a bar timestamp at once.

    The scorer (`gpt_trader.serving.scorers`) is built per loaded version: a fast numpy path for GPT-Trader's own
    models, the pyfunc on a frame for any other. `symbol_map` serves a model on symbols it was not trained on
    (live symbol -> the model asset it is scored as).
    """

    def __init__(self, slot: ChampionSlot, kind: str, *, symbol_map: dict[str, str] | None = None) -> None:
        if kind not in FrameScorer.REQUIRED:
            raise ValueError(f"model kind must be 'transformer' or 'rl', got {kind!r}")
        self.slot, self.kind = slot, kind
        self.symbol_map = dict(symbol_map or {})
        self._failed: set[str] = set()
        self._scorer: tuple[int, Scorer] | None = None  # (id of the loaded model, its scorer)
        self._prepared: dict[int, Scorer] = {}  # built (and warmed) by the probe, taken by the first score

    def probe(self, model: Any, book: FeatureBook) -> None:
        """Raise unless `model` scores the live book (else its logged input example) with finite outputs."""
        scorer = scorer_for(model, self.kind, book.columns, self.symbol_map)
        if book:
            _check_views(scorer.score(book, book.symbols))
        else:
            example = getattr(model, "input_example", None)
            if example is None:
                log.info("%s: no live window or input example yet; accepting without a probe", self.slot.name)
            else:
                FrameScorer(model, self.kind).predict(example)
        self._prepared[id(model)] = scorer

    def score(
        self, book: FeatureBook, symbols: Sequence[str], on_error: AlertHook | None = None
    ) -> dict[str, ModelCall]:
        """The model's calls for those of `symbols` it can score now; empty when no model serves, it is expired
        or it fails (reported once per version: one bad model never stops the session).

        A version that fails here while the version it replaced is still held is refused and the previous one
        scores this same bar instead (`ChampionSlot.fall_back` raises the alert): no bar goes unscored.
        """
        loaded = self.slot.current
        if loaded is None or self.slot.is_expired() or not symbols:
            return {}
        start = time.perf_counter()
        while True:
            try:
                views = self._serving_scorer(loaded.model, book).score(book, symbols)
                _check_views(views)
                break
            except Exception as exc:  # a model's failure must not stop trading the rest of the book
                replacement = self.slot.fall_back(loaded.version, str(exc))
                if replacement is None or replacement is loaded or self.slot.is_expired():
                    key = f"{self.slot.name}/{loaded.version}"
                    if on_error is not None and key not in self._failed:
                        on_error(
                            "ERROR", f"{self.slot.name} v{loaded.version} failed to predict ({exc}); treated as flat"
                        )
                    self._failed.add(key)
                    return {}
                loaded = replacement
        latency = (time.perf_counter() - start) * 1000
        calls = {}
        for symbol, v in views.items():
            output = None
            if self.kind == "transformer" and v.p_sell is not None and v.p_hold is not None and v.p_buy is not None:
                output = TransformerOutput(v.p_sell, v.p_hold, v.p_buy, v.expected_return, model_id=self.slot.name)
            calls[symbol] = ModelCall(self.slot.name, loaded.version, v.target, v.confidence, latency, output)
        return calls

    def _serving_scorer(self, model: Any, book: FeatureBook) -> Scorer:
        if self._scorer is None or self._scorer[0] != id(model):
            scorer = self._prepared.pop(id(model), None)
            self._prepared.clear()  # probes of versions that never served
            if scorer is None:
                scorer = scorer_for(model, self.kind, book.columns, self.symbol_map)
            self._scorer = (id(model), scorer)
        return self._scorer[1]

    def export_state(self, book: FeatureBook) -> tuple[str, dict[str, Any]] | None:
        """(version, state) of a stateful scorer (the RL policy's carried accounts), else None."""
        loaded = self.slot.current
        if loaded is None:
            return None
        scorer = self._serving_scorer(loaded.model, book)
        if not isinstance(scorer, PolicyScorer):
            return None
        return loaded.version, scorer.export_state(book)

    def restore_state(self, book: FeatureBook, version: str, state: dict[str, Any]) -> list[str]:
        """Hand saved scorer state back to the serving scorer when it is still the same version."""
        loaded = self.slot.current
        if loaded is None or loaded.version != version:
            return []
        scorer = self._serving_scorer(loaded.model, book)
        return scorer.restore_state(book, state) if isinstance(scorer, PolicyScorer) else []


def _check_views(views: dict[str, ModelView]) -> None:
    finite = math.isfinite
    for symbol, v in views.items():
        if not (
            finite(v.target)
            and finite(v.confidence)
            and (v.p_sell is None or finite(v.p_sell))
            and (v.p_hold is None or finite(v.p_hold))
            and (v.p_buy is None or finite(v.p_buy))
        ):
            raise ValueError(f"prediction for {symbol} contains NaN or infinite values")


# Orders are sized this far inside the risk manager's limits, so a capped order is never refused for a rounding hair.
_INSIDE = Decimal("0.999")


@dataclass(frozen=True, slots=True)
class _SizingLimits:
    """The sizing and per-trade limits as the decimals the order path needs, converted once (not per symbol)."""

    lot_size: Decimal
    min_order_notional: Decimal
    max_position_fraction: float
    max_order_notional: Decimal  # just inside the risk manager's (`_INSIDE`)
    stop_loss_fraction: Decimal
    max_loss_per_trade_fraction: Decimal

    @classmethod
    def of(cls, trading: TradingConfig) -> _SizingLimits:
        sizing, risk = trading.sizing, trading.risk
        return cls(
            to_decimal(sizing.lot_size),
            to_decimal(sizing.min_order_notional_usd),
            risk.max_position_fraction,
            to_decimal(risk.max_order_notional_usd) * _INSIDE,
            to_decimal(risk.stop_loss_fraction),
            to_decimal(risk.max_loss_per_trade_fraction * float(_INSIDE)),  # as before: inside in float, then exact
        )


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
        self.book = FeatureBook(self.features.columns, trading.live.window_bars)
        self._sigma_column = f"rvol_{min(features.volatility_windows)}"
        self.portfolio = Portfolio(to_decimal(trading.execution.initial_cash_usd))
        self.shadow_tracker = ShadowTracker(costs, self.portfolio.initial_cash, to_decimal(trading.sizing.lot_size))
        self._last_bars: dict[str, datetime] = {}
        self._market_symbol = trading.live.market_symbol
        self._expired_alerted: set[str] = set()
        self._stale: dict[str, str] = {}  # symbols in a stale-data episode -> why (one alert per episode)
        # Timings of the newest LATENCY_WINDOW timestamps (the summary's percentiles): bounded for long sessions.
        self.decision_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.shadow_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)  # the challengers' step, after the decision
        self._shadow_failed = False  # alerted once per session
        self.commit_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.bars_processed = 0
        self.trade_count = 0
        self._day_index = -1  # into portfolio.equity_curve: the current day's first point
        self._limits = _SizingLimits.of(trading)
        for runner in (transformer, rl, *self.shadow):
            if runner is not None:
                runner.slot.set_probe(functools.partial(self._probe, runner))

    def _probe(self, runner: ModelRunner, model: Any) -> None:
        """A new version must score the live book (else its logged input example) before it serves."""
        runner.probe(model, self.book)

    # --- start-up ----------------------------------------------------------------------------------------------
    def start(self, history: dict[str, list[Bar]] | None = None) -> None:
        """Load committed state, restore the broker, seed the risk baselines, warm the features, load models.

        `history` (oldest first, per symbol) must reach the last committed bar after a restart: feature state is
        not persisted, it is rebuilt from bars. The RL policy's simulated accounts are committed with every bar
        and restored when the same version serves after the restart, so a resumed session decides exactly as an
        uninterrupted one. (A new version starts flat at the oldest bar of the feature book and catches up, as
        after a hot swap.) Models load after the features are warm, so a new champion is probed on live rows.
        """
        saved = self.store.load(self.portfolio.initial_cash)
        self.portfolio = saved.portfolio
        self._last_bars = dict(saved.last_bars)
        for symbol, ts in self._last_bars.items():
            # The committed bar's start (its length is not stored): after a restart a held symbol's staleness
            # counts from its last processed bar, not from "never seen", so only a stopped feed flattens it.
            self.risk.on_bar(symbol, ts)
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
        # Symbol by symbol history would be one `update` per bar; by timestamp it is one batch per bar time.
        merged = sorted((bar for bars in (history or {}).values() for bar in bars), key=attrgetter("ts"))
        for _, group in itertools.groupby(merged, key=attrgetter("ts")):
            batch = list(group)
            for bar, vector in zip(batch, self.features.update_many(batch), strict=True):
                self._remember(bar, vector)
        self.refresh_models()
        for runner in (self.transformer, self.rl):
            saved_model = saved.model_states.get(runner.slot.name) if runner is not None else None
            if runner is not None and saved_model is not None:
                restored = runner.restore_state(self.book, *saved_model)
                log.info("%s: carried state restored for %s", runner.slot.name, restored or "no symbol")

    def refresh_models(self) -> None:
        """Poll the registry for moved aliases (swaps happen here, between bars); publish the shadow evidence."""
        for runner in (self.transformer, self.rl, *self.shadow):
            if runner is not None:
                runner.slot.refresh()
        self.publish_shadow()

    def publish_shadow(self) -> int:
        """Write the shadow pairs' live evidence to their challenger versions (see `trading.shadow`)."""
        if not self.shadow:
            return 0
        try:
            return self.shadow_tracker.publish(self.shadow[0].slot.client)
        except Exception as exc:  # the registry being unreachable must not stop trading
            self._on_alert("WARNING", f"could not publish shadow evidence to the registry ({exc})")
            return 0

    # --- the bar path ------------------------------------------------------------------------------------------
    def on_bar(self, bar: Bar, *, bar_length: timedelta | None = None) -> BarOutcome | None:
        """Process one final bar; a bar at or before the last committed one for its symbol is skipped."""
        outcomes = self.on_bars([bar], bar_length=bar_length)
        return outcomes[0] if outcomes else None

    def on_bars(self, bars: Sequence[Bar], *, bar_length: timedelta | None = None) -> list[BarOutcome]:
        """Process final bars, one decision per bar timestamp for all the symbols that closed a bar at it.

        Scoring a timestamp once lets each model run one batched pass over all symbols, and a multi-asset model
        see every asset's bar of that timestamp (never one symbol's new bar beside another's previous one).
        Bars at or before a symbol's last committed bar are skipped; the rest commit in one transaction per
        timestamp.
        """
        fresh: dict[datetime, dict[str, Bar]] = {}
        for bar in bars:
            last = self._last_bars.get(bar.symbol)
            if last is not None and bar.ts <= last:
                continue
            group = fresh.setdefault(bar.ts, {})
            if bar.symbol in group:
                raise ValueError(f"two bars for {bar.symbol} at {bar.ts.isoformat()} in one batch")
            group[bar.symbol] = bar
        outcomes: list[BarOutcome] = []
        for ts in sorted(fresh):
            outcomes.extend(self._on_timestamp(list(fresh[ts].values()), bar_length or timedelta(0)))
        return outcomes

    def _on_timestamp(self, bars: list[Bar], bar_length: timedelta) -> list[BarOutcome]:
        started, cpu_started = time.perf_counter(), time.thread_time()
        ts = bars[0].ts
        if isinstance(self.clock, SimClock) and ts + bar_length > self.clock.now():
            self.clock.set(ts + bar_length)
        outcomes: dict[str, BarOutcome] = {}
        ready: list[str] = []  # symbols with a full feature vector at this bar
        paper = self.broker if isinstance(self.broker, PaperBroker) else None
        fills = [] if paper is not None else self.broker.poll_fills()
        for bar in bars:
            self.risk.on_bar(bar.symbol, bar.ts + bar_length)
            outcomes[bar.symbol] = BarOutcome(bar.symbol, bar.ts)
            if paper is not None and paper.has_open(bar.symbol):
                sigma = self._sigma(bar.symbol)
                fills.extend(paper.on_price(bar.symbol, bar.open, bar.ts, volume=bar.volume, sigma=sigma))
        for fill in fills:
            if self.portfolio.apply_fill(fill):
                outcome = outcomes.get(fill.symbol) or next(iter(outcomes.values()))
                outcome.fills.append(fill)
                self.trade_count += 1
        for outcome in outcomes.values():
            if outcome.fills:
                changed = dict.fromkeys(f.client_order_id for f in outcome.fills)
                outcome.orders.extend(o for o in (self.broker.get_order(c) for c in changed) if o is not None)
        closes: dict[str, Decimal] = {}
        for bar, vector in zip(bars, self.features.update_many(bars), strict=True):
            closes[bar.symbol] = close = to_decimal(bar.close)
            self.portfolio.mark(bar.symbol, close)
            self._remember(bar, vector)
            if vector is not None:
                ready.append(bar.symbol)
        self._update_market_condition(bars)
        t_calls = self.transformer.score(self.book, ready, self._on_alert) if self.transformer and ready else {}
        r_calls = self.rl.score(self.book, ready, self._on_alert) if self.rl and ready else {}
        self._alert_expired()

        kill = self.risk.check_limits(self.portfolio, client_order_prefix=f"kill-{ts:%Y%m%d%H%M%S}")
        if kill is not None:
            self._on_alert("CRITICAL", f"kill-switch: {kill.message}; flattening and halting")
            for order in kill.flatten_orders:
                outcome = outcomes.get(order.symbol) or next(iter(outcomes.values()))
                outcome.orders.append(self.broker.submit(order))
        # After the kill-switch, so a stale symbol's flattening counts the kill orders already open for it.
        for placed in self._guard_stale(ts):
            outcome = outcomes.get(placed.order.symbol) or next(iter(outcomes.values()))
            outcome.orders.append(placed)
        if kill is None and ready and self.risk.state is not TradingState.HALTED:
            self.risk.begin_batch(self.broker.open_orders(), self.portfolio)
            try:
                scored = set(ready)
                for bar in bars:
                    if bar.symbol in scored:
                        self._decide_symbol(
                            bar, closes[bar.symbol], outcomes[bar.symbol], t_calls.get(bar.symbol),
                            r_calls.get(bar.symbol),
                        )  # fmt: skip
            finally:
                self.risk.end_batch()

        # The decision ends here; the commit below is durability, timed on its own.
        decision_ms = (time.perf_counter() - started) * 1000
        decision_cpu_ms = (time.thread_time() - cpu_started) * 1000
        # The challengers trade their private shadow books once the real orders are out: scoring them must not delay
        # the orders (their books share nothing with the real one).
        self._shadow_step(bars, ready, {"transformer": t_calls, "rl": r_calls})
        committing = time.perf_counter()
        point = self.portfolio.record_equity(ts)
        self.store.commit_bars(
            [
                BarUpdate(o.symbol, o.ts, self.portfolio, tuple(o.fills), tuple(o.orders), point)
                for o in outcomes.values()
            ],
            self._model_states(),
        )
        for bar in bars:
            self._last_bars[bar.symbol] = bar.ts
        self.bars_processed += len(bars)
        commit_ms = (time.perf_counter() - committing) * 1000
        for outcome in outcomes.values():
            outcome.decision_ms, outcome.decision_cpu_ms, outcome.commit_ms = decision_ms, decision_cpu_ms, commit_ms
        self.decision_ms.append(decision_ms)
        self.commit_ms.append(commit_ms)
        self._record_metrics(list(outcomes.values()))
        return list(outcomes.values())

    def _model_states(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """The serving models' carried state to commit with the bars (the RL policy's simulated accounts)."""
        out = {}
        for runner in (self.transformer, self.rl):
            exported = runner.export_state(self.book) if runner is not None else None
            if runner is not None and exported is not None and exported[1]:
                out[runner.slot.name] = exported
        return out

    def _decide_symbol(
        self, bar: Bar, price: Decimal, outcome: BarOutcome, t_call: ModelCall | None, r_call: ModelCall | None
    ) -> None:
        outcome.calls.extend(c for c in (t_call, r_call) if c is not None)
        rl_out = RLOutput(r_call.target, r_call.confidence, r_call.model) if r_call is not None else None
        signal = combine_signals(
            bar.symbol, bar.ts, t_call.transformer if t_call else None, rl_out, self.trading.signals
        )
        outcome.signal = signal
        limits = self._limits
        equity = self.portfolio.equity()
        held = self.risk.held(bar.symbol, self.portfolio)  # with the orders still pending
        qty = order_quantity(
            signal.target,
            held,
            equity,
            price,
            lot_size=limits.lot_size,
            max_position_fraction=limits.max_position_fraction,
            min_order_notional=limits.min_order_notional,
        )
        if qty == 0:  # on target already (most symbols at most bars): the caps below would keep it 0
            return
        qty = cap_to_trade_limits(
            qty,
            price,
            equity,
            max_order_notional=limits.max_order_notional,
            stop_loss_fraction=limits.stop_loss_fraction,
            max_loss_per_trade_fraction=limits.max_loss_per_trade_fraction,
            lot_size=limits.lot_size,
        )
        # Sized to fit the position and gross limits (with this bar's earlier orders) rather than refused by them.
        qty = cap_to_headroom(
            qty,
            held,
            price,
            self.risk.headroom(bar.symbol, price, self.portfolio) * _INSIDE,
            lot_size=limits.lot_size,
            min_order_notional=limits.min_order_notional,
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
    def _shadow_step(self, bars: list[Bar], ready: list[str], champion_calls: dict[str, dict[str, ModelCall]]) -> None:
        """Each challenger and the champion it would replace trade private paper books on the same bars; timed
        (`shadow_ms`). Evidence, not trading: a failure alerts once and never costs the bar its commit."""
        if not self.shadow or not self.trading.live.shadow_challenger:
            return
        started = time.perf_counter()
        try:
            self._shadow_books(bars, ready, champion_calls)
        except Exception as exc:
            if not self._shadow_failed:
                log.exception("shadow step failed at %s", bars[0].ts)
                self._on_alert("ERROR", f"shadow evaluation failed ({exc}); live trading continues")
            else:
                log.debug("shadow step failed again at %s: %s", bars[0].ts, exc)
            self._shadow_failed = True
        self.shadow_ms.append((time.perf_counter() - started) * 1000)

    def _shadow_books(self, bars: list[Bar], ready: list[str], champion_calls: dict[str, dict[str, ModelCall]]) -> None:
        for runner in self.shadow:
            challenger = runner.slot.current
            if challenger is None:
                continue
            champion_runner = self.transformer if runner.kind == "transformer" else self.rl
            champion = champion_runner.slot.current if champion_runner is not None else None
            pair = self.shadow_tracker.pair(
                runner.slot.name, challenger.version, champion.version if champion else None, runner.slot.client
            )
            calls = runner.score(self.book, ready, self._on_alert) if ready else {}
            champ = champion_calls.get(runner.kind, {}) if champion is not None else {}
            self.shadow_tracker.step(
                pair,
                bars,
                self._sigma,
                {s: c.target for s, c in calls.items()},
                {s: c.target for s, c in champ.items()},
            )

    def shadow_pnl(self) -> dict[str, Decimal]:
        """Would-be P&L of each challenger's shadow book (the latest pair per model)."""
        return {f"{p.name}@challenger": p.challenger.portfolio.total_pnl() for p in self.shadow_tracker.pairs.values()}

    def shadow_evidence(self) -> dict[str, dict[str, Any]]:
        """This session's live evidence per challenger: bars, its return and the champion's over the same bars."""
        out: dict[str, dict[str, Any]] = {}
        for p in self.shadow_tracker.pairs.values():
            ev = p.evidence()
            if ev is not None:
                out[f"{p.name} v{p.challenger_version}"] = {
                    "bars": ev.bars,
                    "return": ev.challenger_return,
                    "champion_version": ev.champion_version,
                    "champion_return": ev.champion_return,
                }
        return out

    def _update_market_condition(self, bars: list[Bar]) -> None:
        """The market symbol's bar (the first symbol seen, unless configured) feeds the condition classifier."""
        if self.scaler is None:
            return
        if self._market_symbol is None:
            self._market_symbol = bars[0].symbol
        bar = next((b for b in bars if b.symbol == self._market_symbol), None)
        if bar is None:
            return
        decision = self.scaler.update_market_data(bar.close, bar.volume, ts=bar.ts)
        condition = decision.condition.name
        # The state follows the condition both ways (a condition-set HALTED lifts when the market calms); the
        # kill-switch halt is latched and never lifted from here (`RiskManager.reset_kill_switch` only).
        wanted = TradingState[self.trading.live.condition_states.get(condition, "ACTIVE")]
        if not self.risk.killed and self.risk.state is not wanted:
            self.risk.set_state(wanted, f"market condition {condition}")
            if wanted is not TradingState.ACTIVE:
                self._on_alert("WARNING", f"market condition {condition}: trading state {wanted.name}")

    def _alert_expired(self) -> None:
        for runner in (self.transformer, self.rl):
            if runner is None:
                continue
            if not runner.slot.is_expired():
                self._expired_alerted.discard(runner.slot.name)  # a fresh champion ends the episode
            elif runner.slot.name not in self._expired_alerted:
                self._expired_alerted.add(runner.slot.name)
                self._on_alert("WARNING", f"{runner.slot.name}: no fresh champion; its symbols go flat")

    # --- stale data ------------------------------------------------------------------------------------------
    def set_feed_status(self, symbol: str, healthy: bool, reason: str = "") -> None:
        """The data layer's word on `symbol`'s feed (e.g. the realtime pipeline's source health).

        Down: new exposure in `symbol` is refused (`RejectCode.STALE_DATA`) and, once per episode, a held position
        goes flat at once (`live.stale_action`), orders that would add to it are cancelled and an alert fires.
        Healthy: the episode ends as soon as its bars are fresh too. Call it between bars, serialized with
        `on_bars` (the orders it places are saved in their own transaction).
        """
        self.risk.set_feed_status(symbol, healthy, reason)
        if healthy:
            if symbol in self._stale and self.risk.stale_reason(symbol) is None:
                del self._stale[symbol]
                log.warning("%s: feed healthy again; trading it resumes", symbol)
            return
        if symbol in self._stale:
            return
        changed = self._start_stale(symbol, self.risk.stale_reason(symbol) or f"{symbol}: feed down", self.clock.now())
        if changed:
            self.store.save_orders(changed)

    def _guard_stale(self, ts: datetime) -> list[BrokerOrder]:
        """End episodes whose data is fresh again; start one for each held symbol whose data went stale."""
        for symbol in [s for s in self._stale if self.risk.stale_reason(s) is None]:
            del self._stale[symbol]
            log.warning("%s: data fresh again; trading it resumes", symbol)
        changed: list[BrokerOrder] = []
        for symbol in sorted(self.portfolio.positions):
            if symbol in self._stale or self.risk.last_bar(symbol) is None:
                continue  # no data ever came for it here (a position found at the broker): nothing stopped
            reason = self.risk.stale_reason(symbol)
            if reason is not None:
                changed += self._start_stale(symbol, reason, ts)
        return changed

    def _start_stale(self, symbol: str, reason: str, ts: datetime) -> list[BrokerOrder]:
        """Open a stale-data episode: cancel orders that would add exposure, flatten (or hold), alert once."""
        self._stale[symbol] = reason
        changed: list[BrokerOrder] = []
        held = self.portfolio.quantity(symbol)
        for placed in self.broker.open_orders():
            # An order decided on the last good bar would fill whenever data returns, at a price nobody saw.
            if placed.order.symbol == symbol and not is_risk_reducing(held, placed.order.signed_quantity):
                self.broker.cancel(placed.id)
                changed.append(self.broker.get_order(placed.client_order_id) or placed)
        # Open risk-reducing orders (the kill-switch's) already close part of the position: flatten the rest.
        net = held + sum(
            (o.remaining * o.order.side.sign for o in self.broker.open_orders() if o.order.symbol == symbol),
            Decimal(0),
        )
        if self.trading.live.stale_action == "flat" and net != 0:
            # Straight to the broker like the kill-switch's orders: it only shrinks the position, and must go out
            # even when the state refuses everything.
            order = Order(
                make_client_order_id(self.trading.execution.strategy_id, symbol, ts, "stale"),
                symbol,
                Side.SELL if net > 0 else Side.BUY,
                abs(net),
                ts,
            )
            changed.append(self.broker.submit(order))
            action = f"flattening {net} (order {order.client_order_id})"
        elif held != 0:
            action = "closing already under way" if net == 0 else f"holding {held} (stale_action=hold)"
        else:
            action = "no position"
        self._on_alert("WARNING", f"stale data: {reason}; {action}; new exposure refused until it is fresh")
        return changed

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

    def _record_metrics(self, outcomes: list[BarOutcome]) -> None:
        if self.monitor is None:
            return
        equity = float(self.portfolio.equity())
        self.monitor.record_trading_metrics(
            portfolio_value=equity,
            daily_pnl=equity - float(self._day_first_equity()),
            position_count=len(self.portfolio.positions),
            trade_count=self.trade_count,
        )
        # One batched call per model and timestamp: its latency is recorded once.
        seen: set[str] = set()
        for call in (c for o in outcomes for c in o.calls):
            if call.model not in seen:
                seen.add(call.model)
                self.monitor.record_prediction(call.model, call.latency_ms)

    # --- feature window --------------------------------------------------------------------------------------
    def _remember(self, bar: Bar, vector: np.ndarray | None) -> None:
        if vector is not None:
            self.book.append(bar, vector)

    def _sigma(self, symbol: str) -> float:
        value = self.book.last(symbol, self._sigma_column)
        return 0.0 if value is None else value

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
            "shadow_ms_p50": float(np.percentile(self.shadow_ms, 50)) if self.shadow_ms else None,
            "shadow_pnl": {k: float(v) for k, v in self.shadow_pnl().items()},
            "shadow_evidence": self.shadow_evidence(),
        }
