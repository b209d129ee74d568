from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gpt_trader.core.timeframe import Timeframe
from gpt_trader.core.types import Bar
from gpt_trader.data.config import FeaturesConfig
from gpt_trader.data.sources.bundled import BundledSource
from gpt_trader.registry.config import PromotionConfig, RegistryConfig
from gpt_trader.registry.promotion import Evidence, SanityCheck, decide_promotion
from gpt_trader.registry.tracking import setup_experiment
from gpt_trader.serving.champion import ChampionSlot
from gpt_trader.trading.config import TradingConfig
from gpt_trader.trading.costs import CostModel
from gpt_trader.trading.execution import PaperBroker
from gpt_trader.trading.session import LiveSession, ModelRunner
from gpt_trader.trading.shadow import ShadowEvidence
from gpt_trader.trading.state import StateStore
from gpt_trader.trading.types import TradingState
from tests.support.pyfunc_models import AlignedOnlyTransformer, FixedPolicy, FixedTransformer, log_and_register

pytestmark = pytest.mark.slow
T_NAME, R_NAME = "t-model", "r-model"
DAY = timedelta(days=1)


def spx_bars(start: datetime, end: datetime) -> list[Bar]:
    frame = BundledSource().fetch("SPX", start, end, Timeframe.parse("1d"))
    return [Bar(**row) for row in frame.iter_rows(named=True)]


@pytest.fixture
def client(tmp_path):
    import mlflow

    setup_experiment("session", RegistryConfig(), tmp_path / "mlflow")
    return mlflow.MlflowClient()


def make_session(tmp_path, client, *, trading: TradingConfig | None = None, alerts=None, shadow=False):
    trading = trading or TradingConfig.model_validate({"signals": {"policy": "agreement"}})
    store = StateStore(f"sqlite:///{tmp_path}/state.db", strategy="test")
    costs = CostModel()
    on_alert = (lambda s, m: alerts.append((s, m))) if alerts is not None else None
    runners = [
        ModelRunner(ChampionSlot(n, client, on_alert=on_alert), k) for n, k in ((T_NAME, "transformer"), (R_NAME, "rl"))
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
    session, store = make_session(tmp_path, client)
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
