from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gpt_trader.core.clock import SimClock
from gpt_trader.core.timeframe import Timeframe
from gpt_trader.core.types import Bar
from gpt_trader.data.config import FeaturesConfig
from gpt_trader.data.sources.bundled import BundledSource
from gpt_trader.registry.config import PromotionConfig, RegistryConfig
from gpt_trader.registry.promotion import Evidence, SanityCheck, decide_promotion
from gpt_trader.registry.tracking import setup_experiment
from gpt_trader.serving.champion import ChampionSlot
from gpt_trader.trading import session as session_module
from gpt_trader.trading.config import TradingConfig
from gpt_trader.trading.costs import CostModel
from gpt_trader.trading.execution import PaperBroker
from gpt_trader.trading.session import LiveSession, ModelRunner
from gpt_trader.trading.shadow import ShadowEvidence
from gpt_trader.trading.state import StateStore
from gpt_trader.trading.types import Order, Side, TradingState
from tests.support.pyfunc_models import AlignedOnlyTransformer, FixedPolicy, FixedTransformer

pytestmark = pytest.mark.slow
T_NAME, R_NAME = "t-model", "r-model"
DAY = timedelta(days=1)
# Kill-switch limits out of the way, for tests about other rules on 2008's falling market.
NO_KILL = {"daily_loss_limit_fraction": 0.9, "max_drawdown_fraction": 0.9}
# Bars before the features' first full vector; tests about later behaviour warm them through `start(history)`.
WARM = 60


def log_and_register(client, name: str, model, *, champion: bool) -> str:
    """`tests.support.pyfunc_models.log_and_register` without MLflow's pip-requirements inference (~5 s per model
    here): these models load in this process, so their environment is never rebuilt."""
    import mlflow

    from gpt_trader.registry.models import promote, register_challenger

    with mlflow.start_run():
        uri = mlflow.pyfunc.log_model(name="model", python_model=model, pip_requirements=[]).model_uri
    version = register_challenger(client, name, uri, {})
    if champion:
        promote(client, name, version, reason="test")
    return version


class DatedTransformer(FixedTransformer):
    """A confident Buy that turns into a confident Sell on bars from `sell_from` and raises on bars from `fail_from`
    (ISO dates), judged by the newest row it is given: a probe on earlier live rows passes, serving later ones not."""

    def __init__(self, sell_from: str | None = None, fail_from: str | None = None) -> None:
        super().__init__(p_buy=0.8)
        self.sell_from, self.fail_from = sell_from, fail_from

    def predict(self, context, model_input, params=None):
        import pandas as pd

        newest = model_input["ts"].max()
        if self.fail_from is not None and newest >= pd.Timestamp(self.fail_from):
            raise RuntimeError(f"cannot score bars from {self.fail_from}")
        if self.sell_from is not None and newest >= pd.Timestamp(self.sell_from):
            return FixedTransformer(p_buy=0.1, p_sell=0.8).predict(context, model_input, params)
        return super().predict(context, model_input, params)


def spx_bars(start: datetime, end: datetime) -> list[Bar]:
    frame = BundledSource().fetch("SPX", start, end, Timeframe.parse("1d"))
    return [Bar(**row) for row in frame.iter_rows(named=True)]


@pytest.fixture
def client(tmp_path):
    import mlflow

    setup_experiment("session", RegistryConfig(), tmp_path / "mlflow")
    return mlflow.MlflowClient()


def make_session(
    tmp_path,
    client,
    *,
    trading: TradingConfig | None = None,
    alerts=None,
    shadow=False,
    scaler=None,
    clock: SimClock | None = None,
):
    trading = trading or TradingConfig.model_validate({"signals": {"policy": "agreement"}})
    store = StateStore(f"sqlite:///{tmp_path}/state.db", strategy="test")
    costs = CostModel()
    on_alert = (lambda s, m: alerts.append((s, m))) if alerts is not None else None
    hours = trading.live.max_model_age_hours
    age = timedelta(hours=hours) if hours else None
    runners = [
        ModelRunner(ChampionSlot(n, client, on_alert=on_alert, max_age=age, clock=clock), k)
        for n, k in ((T_NAME, "transformer"), (R_NAME, "rl"))
    ]
    shadow_runners = [ModelRunner(ChampionSlot(T_NAME, client, alias="challenger"), "transformer")] if shadow else []
    session = LiveSession(
        trading=trading,
        features=FeaturesConfig(),
        costs=costs,
        broker=PaperBroker(costs, initial_cash=Decimal(100_000)),
        store=store,
        transformer=runners[0],
        rl=runners[1],
        shadow=shadow_runners,
        scaler=scaler,
        clock=clock,
        on_alert=on_alert,
    )
    return session, store


def run(session: LiveSession, bars: list[Bar]) -> list:
    return [o for o in (session.on_bar(b, bar_length=DAY) for b in bars) if o is not None]


def test_session_agreeing_models_go_long_and_book_reconciles(tmp_path, client):
    log_and_register(client, T_NAME, FixedTransformer(p_buy=0.8), champion=True)
    log_and_register(client, R_NAME, FixedPolicy(1.0), champion=True)
    session, _ = make_session(tmp_path, client)
    bars = spx_bars(datetime(2016, 1, 1, tzinfo=UTC), datetime(2016, 7, 1, tzinfo=UTC))
    session.start()
    outcomes = run(session, bars)
    book = session.portfolio
    assert len(outcomes) == len(bars)
    assert session.trade_count >= 1
    qty = book.quantity("SPX")
    assert qty > 0
    # Equity is cash plus the marked position; total P&L is equity minus the starting cash, to the cent.
    assert book.equity() == book.cash + qty * Decimal(str(bars[-1].close))
    assert round(book.total_pnl(), 2) == round(book.equity() - book.initial_cash, 2)
    assert all(o.signal is None or o.signal.target in (0.0, 1.0) for o in outcomes)
    assert session.risk.state is TradingState.ACTIVE


def test_session_timings_keep_the_newest_window_only(tmp_path, client, monkeypatch):
    # A session runs for weeks: its per-timestamp timings are a bounded window, not a list growing by each bar.
    monkeypatch.setattr(session_module, "LATENCY_WINDOW", 7)
    log_and_register(client, T_NAME, FixedTransformer(p_buy=0.8), champion=True)
    log_and_register(client, R_NAME, FixedPolicy(1.0), champion=True)
    log_and_register(client, T_NAME, FixedTransformer(p_buy=0.1, p_sell=0.8), champion=False)
    session, _ = make_session(tmp_path, client, shadow=True)
    session.start()
    outcomes = run(session, spx_bars(datetime(2016, 1, 1, tzinfo=UTC), datetime(2016, 3, 1, tzinfo=UTC)))
    assert session.bars_processed > 7
    assert len(session.decision_ms) == len(session.commit_ms) == len(session.shadow_ms) == 7
    assert list(session.decision_ms) == [o.decision_ms for o in outcomes[-7:]]  # the newest ones
    summary = session.summary()
    assert summary["decision_ms_p99"] >= summary["decision_ms_p50"] > 0
    assert summary["shadow_ms_p50"] is not None


def test_session_restart_resumes_without_double_fills(tmp_path, client):
    log_and_register(client, T_NAME, FixedTransformer(p_buy=0.8), champion=True)
    log_and_register(client, R_NAME, FixedPolicy(1.0), champion=True)
    bars = spx_bars(datetime(2015, 1, 1, tzinfo=UTC), datetime(2015, 12, 31, tzinfo=UTC))
    straight, store = make_session(tmp_path / "a", client)
    straight.start()
    run(straight, bars)
    expected = straight.summary()
    store.close()

    first, store1 = make_session(tmp_path / "b", client)
    first.start()
    run(first, bars[:150])
    store1.close()  # the process "dies" here; only committed state survives
    second, store2 = make_session(tmp_path / "b", client)
    # A restarted process warms its feature state from stored history, then skips what was committed.
    second.start(history={"SPX": bars[:150]})
    assert run(second, bars[:150]) == []  # already processed bars are skipped
    run(second, bars[150:])
    resumed = second.summary()
    assert resumed["equity"] == pytest.approx(expected["equity"], abs=0.01)
    assert resumed["positions"] == expected["positions"]
    fills = store2.fills()
    assert len({f.fill_id for f in fills}) == len(fills)


def test_session_hot_swap_mid_stream_and_broken_champion_kept_out(tmp_path, client):
    alerts: list = []
    log_and_register(client, T_NAME, FixedTransformer(p_buy=0.8), champion=True)
    log_and_register(client, R_NAME, FixedPolicy(1.0), champion=True)
    session, _ = make_session(tmp_path, client, alerts=alerts)
    bars = spx_bars(datetime(2017, 1, 1, tzinfo=UTC), datetime(2017, 12, 31, tzinfo=UTC))
    session.start()
    run(session, bars[:100])
    assert session.portfolio.quantity("SPX") > 0
    # A new champion that says Sell (and an RL that agrees) is swapped in between bars: no bar is skipped.
    log_and_register(client, T_NAME, FixedTransformer(p_buy=0.1, p_sell=0.8), champion=True)
    log_and_register(client, R_NAME, FixedPolicy(-1.0), champion=True)
    session.refresh_models()
    assert session.transformer.slot.current.version == "2"
    outcomes = run(session, bars[100:160])
    assert len(outcomes) == 60
    assert session.portfolio.quantity("SPX") < 0
    # A broken champion is refused: version 2 keeps serving and an alert is raised.
    log_and_register(client, T_NAME, FixedTransformer(broken=True), champion=True)
    session.refresh_models()
    assert session.transformer.slot.current.version == "2"
    assert any(s == "ERROR" and "v3 failed" in m for s, m in alerts)
    assert len(run(session, bars[160:])) == len(bars) - 160


def test_session_shadow_scores_after_the_real_orders_are_out(tmp_path, client):
    """The challengers' shadow step comes after the bar's real orders are submitted (it must not delay them): each
    order the champions send is already at the broker when the shadow scores its bar."""
    log_and_register(client, T_NAME, FixedTransformer(p_buy=0.8), champion=True)
    log_and_register(client, R_NAME, FixedPolicy(1.0), champion=True)
    log_and_register(client, T_NAME, FixedTransformer(p_buy=0.1, p_sell=0.8), champion=False)
    session, _ = make_session(tmp_path, client, shadow=True)
    (runner,) = session.shadow
    at_broker: set[str] = set()
    score = runner.score

    def spy(*args, **kwargs):
        at_broker.update(o.order.client_order_id for o in session.broker.open_orders())
        return score(*args, **kwargs)

    runner.score = spy  # type: ignore[method-assign]
    session.start()
    outcomes = run(session, spx_bars(datetime(2016, 1, 1, tzinfo=UTC), datetime(2016, 7, 1, tzinfo=UTC)))
    sent = {o.order.client_order_id for out in outcomes for o in out.orders if o.order.client_order_id}
    assert sent  # the champions traded
    assert sent <= at_broker
    assert len(session.shadow_ms) == session.bars_processed  # timed apart from the decision, each timestamp
    assert session.summary()["shadow_ms_p50"] is not None


def test_session_shadow_failure_alerts_once_and_never_costs_a_commit(tmp_path, client):
    log_and_register(client, T_NAME, FixedTransformer(p_buy=0.8), champion=True)
    log_and_register(client, R_NAME, FixedPolicy(1.0), champion=True)
    log_and_register(client, T_NAME, FixedTransformer(p_buy=0.1, p_sell=0.8), champion=False)
    alerts: list[tuple[str, str]] = []
    session, store = make_session(tmp_path, client, shadow=True, alerts=alerts)

    def broken(*args, **kwargs):
        raise RuntimeError("shadow book corrupted")

    session.shadow_tracker.step = broken  # type: ignore[method-assign]
    session.start()
    bars = spx_bars(datetime(2016, 1, 1, tzinfo=UTC), datetime(2016, 7, 1, tzinfo=UTC))
    outcomes = run(session, bars)
    assert len(outcomes) == len(bars) == session.bars_processed
    assert session.trade_count > 0  # the champions traded throughout
    assert len(store.fills()) == session.trade_count  # every bar committed
    failures = [m for s, m in alerts if "shadow evaluation failed" in m]
    assert len(failures) == 1
    assert "shadow book corrupted" in failures[0]


def test_session_shadow_challenger_trades_privately(tmp_path, client):
    log_and_register(client, T_NAME, FixedTransformer(p_buy=0.1, p_sell=0.1), champion=True)  # Hold
    log_and_register(client, R_NAME, FixedPolicy(0.0), champion=True)
    log_and_register(client, T_NAME, FixedTransformer(p_buy=0.8), champion=False)  # challenger: Buy
    session, store = make_session(tmp_path, client, shadow=True)
    session.start()
    run(session, spx_bars(datetime(2017, 1, 1, tzinfo=UTC), datetime(2017, 12, 31, tzinfo=UTC)))
    assert session.trade_count == 0  # the champion holds, nothing reached the broker
    assert store.fills() == []
    shadow = session.shadow_pnl()
    assert list(shadow) == [f"{T_NAME}@challenger"]
    assert shadow[f"{T_NAME}@challenger"] > 0  # long through 2017's rally, recorded but never sent
    # The live evidence: the challenger's book against the champion's (Hold: flat) over the same bars, as tags
    # on the challenger version, which the promotion gate reads.
    (evidence,) = session.shadow_evidence().values()
    assert evidence["champion_version"] == "1"
    assert evidence["champion_return"] == 0.0
    assert evidence["return"] > 0.05
    assert evidence["bars"] == session.bars_processed
    assert session.publish_shadow() == 1
    assert session.publish_shadow() == 0  # unchanged evidence is not rewritten
    tags = client.get_model_version(T_NAME, "2").tags
    live = ShadowEvidence.from_tags(tags)
    assert live is not None
    assert live.bars == evidence["bars"]
    assert live.champion_version == "1"
    assert live.challenger_return == pytest.approx(evidence["return"])
    cfg = PromotionConfig(require_beat_buy_and_hold=False)
    sane = SanityCheck(loads=True, predicts=True, finite=True, has_signature=True, latency_p99_ms=1.0)
    offline = (Evidence("2", sane, {"sharpe": 1.0}, "w"), Evidence("1", sane, {"sharpe": 0.5}, "w"))
    assert decide_promotion(*offline, cfg, live).promote
    trailing = ShadowEvidence("1", live.bars, live.first_bar, live.last_bar, -0.02, 0.0)
    assert not decide_promotion(*offline, cfg, trailing).promote


def test_session_kill_switch_flattens_and_halts_in_a_crash(tmp_path, client):
    alerts: list = []
    log_and_register(client, T_NAME, FixedTransformer(p_buy=0.8), champion=True)
    log_and_register(client, R_NAME, FixedPolicy(1.0), champion=True)
    trading = TradingConfig.model_validate(
        {"signals": {"policy": "agreement"}, "risk": {"max_drawdown_fraction": 0.05, "max_position_fraction": 1.0}}
    )
    session, _ = make_session(tmp_path, client, trading=trading, alerts=alerts)
    session.start()
    run(session, spx_bars(datetime(2008, 6, 1, tzinfo=UTC), datetime(2008, 12, 31, tzinfo=UTC)))
    assert session.risk.state is TradingState.HALTED
    assert session.portfolio.quantity("SPX") == 0
    assert any(s == "CRITICAL" and "kill-switch" in m for s, m in alerts)
    drawdown = 1 - min(p.equity for p in session.portfolio.equity_curve) / max(
        p.equity for p in session.portfolio.equity_curve
    )
    assert drawdown < 0.10  # halted near the 5% limit, long before 2008's full fall


def test_session_without_champions_stays_flat_and_alerts(tmp_path, client):
    alerts: list = []
    session, _ = make_session(tmp_path, client, alerts=alerts)
    session.start()
    run(session, spx_bars(datetime(2017, 1, 1, tzinfo=UTC), datetime(2017, 6, 1, tzinfo=UTC)))
    assert session.trade_count == 0
    assert any("no fresh champion" in m for _, m in alerts)


def test_session_bar_at_or_before_committed_is_skipped(tmp_path, client):
    session, _ = make_session(tmp_path, client)
    session.start()
    bars = spx_bars(datetime(2017, 1, 1, tzinfo=UTC), datetime(2017, 2, 1, tzinfo=UTC))
    run(session, bars)
    assert session.on_bar(replace(bars[-1], close=bars[-1].close * 2)) is None


def test_session_start_reconciles_with_a_real_broker(tmp_path, client):
    from gpt_trader.trading.alpaca import AlpacaBroker
    from tests.support.alpaca_trading_server import AlpacaTradingServer

    alerts: list = []
    with AlpacaTradingServer() as server:
        # Filled at the broker while we were down: our committed book knows nothing of it.
        server.set_position("SPX", Decimal(3), Decimal("2700.5"))
        with AlpacaBroker(server.credentials(), base_url=server.url, backoff_base_secs=0.001) as broker:
            store = StateStore(f"sqlite:///{tmp_path}/state.db", strategy="test")
            session = LiveSession(
                trading=TradingConfig(),
                features=FeaturesConfig(),
                costs=CostModel(),
                broker=broker,
                store=store,
                on_alert=lambda s, m: alerts.append((s, m)),
            )
            session.start()
    assert session.portfolio.quantity("SPX") == Decimal(3)
    assert any("reconciliation fixed" in m for _, m in alerts)
    reloaded = StateStore(f"sqlite:///{tmp_path}/state.db", strategy="test").load(Decimal(100_000))
    assert reloaded.portfolio.quantity("SPX") == Decimal(3)  # the fix was persisted


def test_session_two_symbols_same_timestamps_one_equity_point_each(tmp_path, client):
    log_and_register(client, T_NAME, FixedTransformer(p_buy=0.8), champion=True)
    log_and_register(client, R_NAME, FixedPolicy(1.0), champion=True)
    # Fed one bar at a time, IXIC's bar of the previous day is the newest when SPX's arrives: with daily bars the
    # freshness limit must cover a long weekend, or IXIC would count as a stopped feed and go flat.
    trading = TradingConfig.model_validate(
        {"signals": {"policy": "agreement"}, "risk": {"max_bar_age_secs": 7 * 86400}}
    )
    session, store = make_session(tmp_path, client, trading=trading)
    session.start()
    start, end = datetime(2016, 1, 1, tzinfo=UTC), datetime(2016, 6, 1, tzinfo=UTC)
    spx = spx_bars(start, end)
    ixic = [Bar(**r) for r in BundledSource().fetch("IXIC", start, end, Timeframe.parse("1d")).iter_rows(named=True)]
    for a, b in zip(spx, ixic, strict=True):  # both symbols close every bar at the same time
        session.on_bar(a, bar_length=DAY)
        session.on_bar(b, bar_length=DAY)
    curve = store.load(Decimal(100_000)).portfolio.equity_curve
    assert [p.ts for p in curve] == [b.ts for b in spx]
    assert curve[-1].equity == session.portfolio.equity()
    assert session.portfolio.quantity("SPX") > 0
    assert session.portfolio.quantity("IXIC") > 0


def test_session_on_bars_decides_once_per_timestamp_with_every_symbols_bar(tmp_path, client):
    alerts: list = []
    log_and_register(client, T_NAME, AlignedOnlyTransformer(p_buy=0.8), champion=True)
    log_and_register(client, R_NAME, FixedPolicy(1.0), champion=True)
    session, store = make_session(tmp_path, client, alerts=alerts)
    session.start()
    start, end = datetime(2016, 1, 1, tzinfo=UTC), datetime(2016, 6, 1, tzinfo=UTC)
    spx = spx_bars(start, end)
    ixic = [Bar(**r) for r in BundledSource().fetch("IXIC", start, end, Timeframe.parse("1d")).iter_rows(named=True)]
    for a, b in zip(spx, ixic, strict=True):
        outcomes = session.on_bars([a, b], bar_length=DAY)
        assert [o.symbol for o in outcomes] == ["SPX", "IXIC"]
        assert outcomes[0].decision_ms == outcomes[1].decision_ms  # one decision for the timestamp
    assert len(session.decision_ms) == len(spx)
    assert not [m for s, m in alerts if "failed to predict" in m]  # the model never saw a half-updated window
    assert session.portfolio.quantity("SPX") > 0
    assert session.portfolio.quantity("IXIC") > 0
    assert [p.ts for p in store.load(Decimal(100_000)).portfolio.equity_curve] == [b.ts for b in spx]


def test_session_bar_by_bar_shows_a_multi_asset_model_mixed_bars(tmp_path, client):
    """The defect on_bars fixes: deciding on SPX's new bar before IXIC's arrived mixes bars of two timestamps."""
    alerts: list = []
    log_and_register(client, T_NAME, AlignedOnlyTransformer(p_buy=0.8), champion=True)
    log_and_register(client, R_NAME, FixedPolicy(1.0), champion=True)
    session, _ = make_session(tmp_path, client, alerts=alerts)
    session.start()
    start, end = datetime(2016, 1, 1, tzinfo=UTC), datetime(2016, 6, 1, tzinfo=UTC)
    spx = spx_bars(start, end)
    ixic = [Bar(**r) for r in BundledSource().fetch("IXIC", start, end, Timeframe.parse("1d")).iter_rows(named=True)]
    for a, b in zip(spx, ixic, strict=True):
        session.on_bar(a, bar_length=DAY)
        session.on_bar(b, bar_length=DAY)
    assert any("failed to predict" in m and "different bars" in m for _, m in alerts)


def test_session_window_has_the_offline_feature_dtypes(tmp_path, client):
    from gpt_trader.data.features import CALENDAR_COLUMNS, build_features

    session, _ = make_session(tmp_path, client)
    session.start()
    bars = spx_bars(datetime(2016, 1, 1, tzinfo=UTC), datetime(2016, 12, 31, tzinfo=UTC))
    run(session, bars)
    window = session.book.frame(["SPX"])
    offline = build_features(BundledSource().fetch("SPX", None, None, Timeframe.parse("1d")), FeaturesConfig())
    for column in CALENDAR_COLUMNS:
        assert window[column].dtype.kind == "i", column  # model signatures refuse floats here
        want = offline.filter(offline["ts"] >= bars[-5].ts)
        assert window[column].tail(5).tolist() == want[column].head(5).to_list()


def test_session_restart_restores_the_rl_account_and_decides_as_an_uninterrupted_run(tmp_path, client):
    """A real PPO pyfunc served by the fast scorer: its simulated accounts are committed with the bars, so a
    session restarted mid-stream makes the same decisions as one that never stopped (and, without the saved
    accounts, it would not)."""
    import mlflow
    import torch
    from stable_baselines3 import PPO

    from gpt_trader.ml.rl.config import EnvConfig
    from gpt_trader.ml.rl.env import TradingEnv
    from gpt_trader.ml.rl.pyfunc import log_trading_policy
    from gpt_trader.registry.models import promote, register_challenger
    from tests.unit.serving.test_scorers import offline_features, policy_spec

    spec = policy_spec()
    env = TradingEnv.streaming(len(spec.feature_names), env_config=EnvConfig(window_size=spec.window_size))
    agent = PPO("MlpPolicy", env, seed=7, device="cpu")
    with torch.no_grad():  # a random policy that reacts strongly to its inputs, the account included
        agent.policy.action_net.weight.mul_(60.0)
    agent.save(tmp_path / "agent.zip")
    features = offline_features(("SPX",), datetime(2012, 1, 1, tzinfo=UTC), datetime(2014, 1, 1, tzinfo=UTC))
    with mlflow.start_run():
        uri = log_trading_policy(tmp_path / "agent.zip", "ppo", spec, features).model_uri
    promote(client, R_NAME, register_challenger(client, R_NAME, uri, {}), reason="test")
    log_and_register(client, T_NAME, FixedTransformer(p_buy=0.8), champion=True)
    trading = TradingConfig.model_validate({"signals": {"policy": "rl"}, "live": {"window_bars": 40}})
    bars = spx_bars(datetime(2015, 1, 1, tzinfo=UTC), datetime(2016, 12, 31, tzinfo=UTC))
    warm, cut = 100, 300

    def session_on(db: str) -> LiveSession:
        store = StateStore(f"sqlite:///{tmp_path}/{db}.db", strategy="test")
        costs = CostModel()
        return LiveSession(
            trading=trading,
            features=FeaturesConfig(),
            costs=costs,
            broker=PaperBroker(costs, initial_cash=Decimal(100_000)),
            store=store,
            transformer=ModelRunner(ChampionSlot(T_NAME, client), "transformer"),
            rl=ModelRunner(ChampionSlot(R_NAME, client), "rl"),
        )

    def targets(session: LiveSession, tape: list[Bar]) -> dict[datetime, float]:
        out = {}
        for bar in tape:
            for outcome in session.on_bars([bar], bar_length=DAY):
                out[outcome.ts] = next(c.target for c in outcome.calls if c.model == R_NAME)
        return out

    straight = session_on("straight")
    straight.start({"SPX": bars[:warm]})
    want = targets(straight, bars[warm:])
    assert len(set(want.values())) == 3  # the policy really trades between short, flat and long

    def resumed(db: str, keep_state: bool) -> dict[datetime, float]:
        first = session_on(db)
        first.start({"SPX": bars[:warm]})
        targets(first, bars[warm:cut])
        if not keep_state:
            with first.store.engine.begin() as conn:
                conn.exec_driver_sql("DELETE FROM trading_model_state")
        first.store.close()
        second = session_on(db)  # a new process: nothing carried over but the state store
        second.start({"SPX": bars[:cut]})
        return targets(second, bars[cut:])

    got = resumed("resumed", keep_state=True)
    assert got == {ts: want[ts] for ts in got}
    assert len(got) == len(bars) - cut
    lost = resumed("no-state", keep_state=False)
    assert lost != {ts: want[ts] for ts in lost}  # without the saved accounts the policy restarts flat


# --- market condition -> trading state -------------------------------------------------------------------------
def run_2008(session: LiveSession) -> list[tuple]:
    """Real S&P 500 bars through 2008's crash and the calm after, per bar: (ts, market condition, trading state,
    orders created at the bar, outcome). The classifier and the features are warmed on the bars before September."""
    bars = spx_bars(datetime(2008, 3, 1, tzinfo=UTC), datetime(2009, 1, 31, tzinfo=UTC))
    cut = next(i for i, b in enumerate(bars) if b.ts >= datetime(2008, 9, 1, tzinfo=UTC))
    for bar in bars[:cut]:
        session.scaler.update_market_data(bar.close, bar.volume, ts=bar.ts)
    session.start({"SPX": bars[:cut]})
    seen = []
    for bar in bars[cut:]:
        (outcome,) = session.on_bars([bar], bar_length=DAY)
        created = [o for o in outcome.orders if o.order.ts == bar.ts]
        seen.append((bar.ts, session.scaler.condition.name, session.risk.state, created, outcome))
    return seen


def test_session_condition_halted_refuses_orders_in_extreme_and_trading_resumes_after(tmp_path, client):
    from gpt_trader.scaling import AutoScaler

    alerts: list = []
    # The model turns from Buy to Sell in the middle of the crash: under HALTED the position must not move.
    log_and_register(client, T_NAME, DatedTransformer(sell_from="2008-10-15"), champion=True)
    log_and_register(client, R_NAME, FixedPolicy(0.0), champion=True)
    live = {"condition_states": {"EXTREME": "HALTED"}, "window_bars": 16}
    trading = TradingConfig.model_validate({"signals": {"policy": "transformer"}, "risk": NO_KILL, "live": live})
    session, _ = make_session(tmp_path, client, trading=trading, alerts=alerts, scaler=AutoScaler())
    seen = run_2008(session)
    extreme = [row for row in seen if row[1] == "EXTREME"]
    assert len(extreme) > 40  # October to December 2008
    assert extreme[0][0] < datetime(2008, 10, 15, tzinfo=UTC) < extreme[-1][0]
    assert all(state is TradingState.HALTED and not created for _, _, state, created, _ in extreme)
    # Long going in (bought in the summer), still long at the end of the halt although the model said Sell.
    before = [row for row in seen if row[0] < extreme[0][0]]
    assert any(o.order.side is Side.BUY for row in before for o in row[3])
    assert not [f for row in extreme[1:] for f in row[4].fills]  # nothing traded while halted
    after = [row for row in seen if row[0] > extreme[-1][0]]
    assert after
    assert all(state is TradingState.ACTIVE for _, _, state, _, _ in after)  # the condition-set halt lifted
    assert any(o.order.side is Side.SELL for _, _, _, created, _ in after for o in created)
    assert session.portfolio.quantity("SPX") < 0  # the Sell view is traded once the market calmed
    assert ("WARNING", "market condition EXTREME: trading state HALTED") in alerts


def test_session_kill_switch_halt_stays_latched_when_the_condition_calms(tmp_path, client):
    from gpt_trader.scaling import AutoScaler

    alerts: list = []
    log_and_register(client, T_NAME, FixedTransformer(p_buy=0.8), champion=True)
    log_and_register(client, R_NAME, FixedPolicy(1.0), champion=True)
    live = {"condition_states": {"EXTREME": "HALTED"}, "window_bars": 16}
    trading = TradingConfig.model_validate({"signals": {"policy": "agreement"}, "live": live})
    session, _ = make_session(tmp_path, client, trading=trading, alerts=alerts, scaler=AutoScaler())
    seen = run_2008(session)
    assert any(s == "CRITICAL" and "kill-switch" in m for s, m in alerts)
    assert seen[-1][1] != "EXTREME"  # the market calmed ...
    assert session.risk.killed  # ... but the kill-switch halt is a person's to lift
    assert all(state is TradingState.HALTED for _, condition, state, _, _ in seen[-10:])
    assert session.portfolio.quantity("SPX") == 0


# --- stale data ---------------------------------------------------------------------------------------------------
def test_session_symbol_whose_bars_stop_goes_flat_once_and_trades_again_when_they_return(tmp_path, client):
    alerts: list = []
    log_and_register(client, T_NAME, FixedTransformer(p_buy=0.8), champion=True)
    log_and_register(client, R_NAME, FixedPolicy(1.0), champion=True)
    limit = 3.5 * 86400  # daily bars: a weekend is not a stopped feed
    trading = TradingConfig.model_validate(
        {"signals": {"policy": "agreement"}, "risk": {"max_bar_age_secs": limit}, "live": {"window_bars": 16}}
    )
    session, store = make_session(tmp_path, client, trading=trading, alerts=alerts)
    start, end = datetime(2016, 1, 1, tzinfo=UTC), datetime(2016, 7, 1, tzinfo=UTC)
    spx = spx_bars(start, end)
    ixic = [Bar(**r) for r in BundledSource().fetch("IXIC", start, end, Timeframe.parse("1d")).iter_rows(named=True)]
    session.start({"SPX": spx[:WARM], "IXIC": ixic[:WARM]})
    stop, back = WARM + 10, WARM + 25
    for a, b in zip(spx[WARM:stop], ixic[WARM:stop], strict=True):
        session.on_bars([a, b], bar_length=DAY)
    held = session.portfolio.quantity("IXIC")
    assert held > 0
    last_ixic_end = ixic[stop - 1].ts + DAY
    flattened_at = None
    for bar in spx[stop:back]:  # IXIC's feed stopped; SPX's bars keep coming
        (outcome,) = session.on_bars([bar], bar_length=DAY)
        sells = [o for o in outcome.orders if o.order.symbol == "IXIC" and o.order.side is Side.SELL]
        age = (bar.ts + DAY - last_ixic_end).total_seconds()
        if age <= limit:
            assert not sells, f"IXIC flattened at {bar.ts} though its last bar is only {age:.0f}s old"
        elif flattened_at is None:
            assert [o.order.quantity for o in sells] == [held]
            flattened_at = bar.ts
        else:
            assert not sells  # one flattening per episode
        if flattened_at is not None:
            # New IXIC exposure is refused while its data is stale; cutting it is not.
            buy = Order("probe-buy", "IXIC", Side.BUY, Decimal(1), bar.ts)
            assert "stale_data" in [c.value for c in session.risk.check_order(buy, session.portfolio).codes]
    assert flattened_at is not None
    stale_alerts = [m for s, m in alerts if "stale data: IXIC" in m]
    assert len(stale_alerts) == 1
    assert f"flattening {held}" in stale_alerts[0]
    assert any(o.order.symbol == "IXIC" and o.status.is_open for o in store.load(Decimal(100_000)).orders)
    # The feed comes back: the flattening fills at IXIC's first price, then the models' Buy is traded again.
    outcomes = session.on_bars([spx[back], ixic[back]], bar_length=DAY)
    assert [(f.side, f.quantity) for f in outcomes[1].fills] == [(Side.SELL, held)]
    for a, b in zip(spx[back + 1 :], ixic[back + 1 :], strict=True):
        session.on_bars([a, b], bar_length=DAY)
    assert session.portfolio.quantity("IXIC") > 0
    assert len([m for s, m in alerts if "stale data" in m]) == 1


@pytest.mark.parametrize("action", ["flat", "hold"])
def test_session_feed_reported_down_flattens_or_holds_and_refuses_exposure_until_healthy(tmp_path, client, action):
    alerts: list = []
    log_and_register(client, T_NAME, FixedTransformer(p_buy=0.8), champion=True)
    log_and_register(client, R_NAME, FixedPolicy(1.0), champion=True)
    live = {"stale_action": action, "window_bars": 16}
    trading = TradingConfig.model_validate({"signals": {"policy": "agreement"}, "live": live})
    session, store = make_session(tmp_path, client, trading=trading, alerts=alerts)
    bars = spx_bars(datetime(2016, 1, 1, tzinfo=UTC), datetime(2016, 7, 1, tzinfo=UTC))
    session.start({"SPX": bars[:WARM]})
    down, up = WARM + 10, WARM + 20
    run(session, bars[WARM:down])
    held = session.portfolio.quantity("SPX")
    assert held > 0
    session.set_feed_status("SPX", False, "alpaca: connection lost")
    session.set_feed_status("SPX", False, "alpaca: still reconnecting")  # the same episode: no second alert
    (alert,) = [m for s, m in alerts if "stale data" in m]
    assert "feed down (alpaca: connection lost)" in alert
    buy = Order("probe-buy", "SPX", Side.BUY, Decimal(1), bars[down - 1].ts)
    (stale,) = [r for r in session.risk.check_order(buy, session.portfolio).rejections if r.code == "stale_data"]
    assert "feed down (alpaca: still reconnecting)" in stale.message  # the latest word on the feed
    saved = [o for o in store.load(Decimal(100_000)).orders if o.status.is_open]
    if action == "flat":
        assert [(o.order.side, o.order.quantity) for o in saved] == [(Side.SELL, held)]  # persisted at once
    else:
        assert saved == []
        assert "holding" in alert
    # Bars still arrive (say, from a backfill) while the feed is reported down: no new exposure is taken.
    outcomes = run(session, bars[down:up])
    expected = 0 if action == "flat" else held
    assert session.portfolio.quantity("SPX") == expected
    assert all(not [o for o in x.orders if o.order.ts == x.ts and o.order.side is Side.BUY] for x in outcomes)
    assert any("stale_data" in r for x in outcomes for r in x.rejections) or action == "hold"
    session.set_feed_status("SPX", True, "")
    run(session, bars[up:])
    assert session.portfolio.quantity("SPX") > 0
    assert len([m for s, m in alerts if "stale data" in m]) == 1


def test_session_expired_champion_sends_its_symbols_flat_with_an_alert(tmp_path, client):
    alerts: list = []
    log_and_register(client, T_NAME, FixedTransformer(p_buy=0.8), champion=True)
    log_and_register(client, R_NAME, FixedPolicy(1.0), champion=True)
    registered = datetime.now(UTC)
    bars = spx_bars(datetime(2016, 1, 1, tzinfo=UTC), datetime(2016, 7, 1, tzinfo=UTC))
    # Real bars moved (by whole weeks) so that the models were registered at bar 70: time is the bars' time.
    weeks = (registered - bars[70].ts).days // 7
    bars = [replace(b, ts=b.ts + timedelta(weeks=weeks)) for b in bars]
    max_age = timedelta(days=20)
    trading = TradingConfig.model_validate(
        {"signals": {"policy": "agreement"}, "live": {"max_model_age_hours": max_age.total_seconds() / 3600}}
    )
    clock = SimClock(datetime(1970, 1, 1, tzinfo=UTC))
    session, _ = make_session(tmp_path, client, trading=trading, alerts=alerts, clock=clock)
    session.start()
    fresh = [b for b in bars if b.ts + DAY - registered < max_age - DAY]
    run(session, fresh)
    assert session.portfolio.quantity("SPX") > 0
    assert not [m for _, m in alerts if "no fresh champion" in m]
    outcomes = run(session, bars[len(fresh) :])
    assert len(outcomes) == len(bars) - len(fresh)  # every bar processed, but without a model's view
    assert session.portfolio.quantity("SPX") == 0
    expired = [m for _, m in alerts if "no fresh champion" in m]
    assert sorted(expired) == sorted(f"{n}: no fresh champion; its symbols go flat" for n in (T_NAME, R_NAME))
    assert all(not o.calls for o in outcomes[2:])


# --- champion fallback --------------------------------------------------------------------------------------------
def test_session_new_champion_failing_in_serving_falls_back_to_the_previous_version(tmp_path, client):
    alerts: list = []
    log_and_register(client, T_NAME, FixedTransformer(p_buy=0.8), champion=True)
    log_and_register(client, R_NAME, FixedPolicy(1.0), champion=True)
    session, _ = make_session(tmp_path, client, alerts=alerts)
    bars = spx_bars(datetime(2017, 1, 1, tzinfo=UTC), datetime(2017, 7, 1, tzinfo=UTC))
    session.start()
    run(session, bars[:70])
    # v2 passes its probe on the live rows (before March 2017) and fails on bars from then on.
    fail_from = bars[85].ts
    log_and_register(client, T_NAME, DatedTransformer(fail_from=fail_from.date().isoformat()), champion=True)
    session.refresh_models()
    assert session.transformer.slot.current.version == "2"
    outcomes = run(session, bars[70:])
    versions = [next(c.version for c in o.calls if c.model == T_NAME) for o in outcomes]  # no bar unscored
    assert versions == ["2"] * 15 + ["1"] * (len(bars) - 85)
    (alert,) = [(s, m) for s, m in alerts if "v2" in m]
    assert alert[0] == "ERROR"
    assert "v2 failed to predict while serving" in alert[1]
    assert "fell back to v1" in alert[1]
    assert not [m for _, m in alerts if "treated as flat" in m]
    session.refresh_models()  # the alias still names v2: it is not swapped back in
    assert session.transformer.slot.current.version == "1"
    assert session.portfolio.quantity("SPX") > 0


# --- RL champion kinds --------------------------------------------------------------------------------------------
def test_session_serves_a_registered_dqn_champion_through_the_policy_scorer(tmp_path, client):
    import mlflow
    import torch

    from gpt_trader.ml.rl.config import EnvConfig
    from gpt_trader.ml.rl.dqn import EnhancedDQN
    from gpt_trader.ml.rl.env import TradingEnv
    from gpt_trader.ml.rl.policies import DuelingDQNPolicy
    from gpt_trader.ml.rl.pyfunc import log_trading_policy
    from gpt_trader.registry.models import promote, register_challenger
    from gpt_trader.serving.scorers import PolicyScorer
    from tests.unit.serving.test_scorers import offline_features, policy_spec

    spec = policy_spec()
    env = TradingEnv.streaming(len(spec.feature_names), env_config=EnvConfig(window_size=spec.window_size))
    agent = EnhancedDQN(DuelingDQNPolicy, env, buffer_size=64, policy_kwargs={"net_arch": [16]}, seed=3, device="cpu")
    with torch.no_grad():  # a random net whose greedy action moves with its inputs
        agent.q_net.advantage_net[-1].weight.mul_(60.0)
    agent.save(tmp_path / "dqn.zip")
    features = offline_features(("SPX",), datetime(2012, 1, 1, tzinfo=UTC), datetime(2014, 1, 1, tzinfo=UTC))
    with mlflow.start_run():
        uri = log_trading_policy(tmp_path / "dqn.zip", "dqn", spec, features).model_uri
    promote(client, R_NAME, register_challenger(client, R_NAME, uri, {}), reason="test")
    log_and_register(client, T_NAME, FixedTransformer(p_buy=0.8), champion=True)
    alerts: list = []
    trading = TradingConfig.model_validate(
        {"signals": {"policy": "rl"}, "live": {"window_bars": 40, "rl_model": "dqn"}}
    )
    session, _ = make_session(tmp_path, client, trading=trading, alerts=alerts)
    bars = spx_bars(datetime(2016, 1, 1, tzinfo=UTC), datetime(2016, 7, 1, tzinfo=UTC))
    session.start({"SPX": bars[:WARM]})
    outcomes = run(session, bars[WARM:])
    assert isinstance(session.rl._scorer[1], PolicyScorer)  # the fast path, not the pyfunc per bar
    calls = [c for o in outcomes for c in o.calls if c.model == R_NAME]
    assert len(calls) > 40
    fractions = set(EnvConfig().position_fractions)
    assert {c.target for c in calls} <= fractions
    assert len({c.target for c in calls}) > 1  # the DQN's own decisions, bar by bar
    assert session.trade_count > 0
    assert not [m for s, m in alerts if s == "ERROR"]


def test_session_sizes_simultaneous_orders_to_fit_the_gross_limit_together(tmp_path, client):
    # Four symbols each want a full 0.5-of-equity position at once; the 1.0 gross limit holds for them together:
    # orders of one timestamp are sized against the ones placed before them, none is refused for gross exposure.
    log_and_register(client, T_NAME, FixedTransformer(p_buy=0.8), champion=True)
    log_and_register(client, R_NAME, FixedPolicy(1.0), champion=True)
    trading = TradingConfig.model_validate(
        {"signals": {"policy": "agreement"}, "risk": {**NO_KILL, "max_gross_exposure": 1.0}}
    )
    session, _ = make_session(tmp_path, client, trading=trading)
    symbols = ["A", "B", "C", "D"]
    spx = spx_bars(datetime(2016, 1, 1, tzinfo=UTC), datetime(2016, 9, 1, tzinfo=UTC))
    session.start({s: [replace(b, symbol=s) for b in spx[:WARM]] for s in symbols})
    placed = 0
    for bar in spx[WARM:]:
        book = session.portfolio
        gross_before, equity = book.gross_exposure(), book.equity()
        outcomes = session.on_bars([replace(bar, symbol=s) for s in symbols], bar_length=DAY)
        new_orders = [o for out in outcomes for o in out.orders if o.order.ts == bar.ts]
        added = sum(
            (o.order.quantity * Decimal(str(bar.close)) for o in new_orders if o.order.side is Side.BUY), Decimal(0)
        )
        assert gross_before + added <= equity * Decimal(trading.risk.max_gross_exposure)
        assert not [r for out in outcomes for r in out.rejections if r.startswith("max_gross_exposure")]
        placed += len(new_orders)
    assert placed >= 2
    assert sum(1 for s in symbols if session.portfolio.quantity(s) > 0) == 2  # two fill the whole limit
