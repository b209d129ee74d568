"""The fast scorers equal the models' own predict on the same live rows (real SPX/IXIC bars).

- TransformerScorer (one batched forward pass from the book's numpy rows) == TransformerTrader.predict on the
  book's frame, for a multi-asset model and for a single-asset model served on another symbol.
- PolicyScorer (account carried bar to bar) == the RL pyfunc simulating over the same rows from the same start,
  at every bar; with a policy whose action depends on the account, so a wrong carry shows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from gpt_trader.core.timeframe import Timeframe
from gpt_trader.core.types import Bar
from gpt_trader.data.config import FeaturesConfig
from gpt_trader.data.features import build_features
from gpt_trader.data.sources.bundled import BundledSource
from gpt_trader.ml.rl.config import EnvConfig, RewardConfig
from gpt_trader.ml.rl.market import market_arrays
from gpt_trader.ml.rl.pyfunc import ObservationSpec, TradingPolicyModel
from gpt_trader.ml.transformer.trader import TransformerTrader
from gpt_trader.serving.book import FeatureBook
from gpt_trader.serving.features import LiveFeatures
from gpt_trader.serving.scorers import PolicyScorer, TransformerScorer
from gpt_trader.trading.config import CostConfig
from tests.unit.ml.transformer.synthetic import tiny_config

FEATURES = FeaturesConfig()
ROOT = Path(__file__).resolve().parents[3]
DAY = Timeframe.parse("1d")


def bars(symbol: str, start: datetime, end: datetime) -> list[Bar]:
    frame = BundledSource().fetch(symbol, start, end, DAY)
    return [Bar(**row) for row in frame.iter_rows(named=True)]


def offline_features(symbols: tuple[str, ...], start: datetime, end: datetime):
    import polars as pl

    source = BundledSource()
    return build_features(pl.concat([source.fetch(s, start, end, DAY) for s in symbols]), FEATURES)


def feed(book: FeatureBook, live: LiveFeatures, bar: Bar) -> None:
    vector = live.update(bar)
    if vector is not None:
        book.append(bar, vector)


@pytest.fixture(scope="module")
def multi_asset() -> TransformerTrader:
    trader = TransformerTrader(tiny_config(max_epochs=1), features=FEATURES, track=False)
    trader.train(offline_features(("SPX", "IXIC"), datetime(2012, 1, 1, tzinfo=UTC), datetime(2015, 1, 1, tzinfo=UTC)))
    return trader


def test_transformer_scorer_equals_trader_predict_multi_asset(multi_asset: TransformerTrader):
    start, end = datetime(2015, 9, 1, tzinfo=UTC), datetime(2016, 6, 30, tzinfo=UTC)
    spx, ixic = bars("SPX", start, end), bars("IXIC", start, end)
    assert [b.ts for b in spx] == [b.ts for b in ixic]
    live, book = LiveFeatures(FEATURES), FeatureBook(LiveFeatures(FEATURES).columns, 64)
    scorer = TransformerScorer(multi_asset, book.columns)
    checked = 0
    for i, (a, b) in enumerate(zip(spx, ixic, strict=True)):
        feed(book, live, a)
        feed(book, live, b)
        if book.size("SPX") < 8 or i % 5:  # 8 = the tiny model's window
            continue
        views = scorer.score(book, ["SPX", "IXIC"])
        want = multi_asset.predict(book.frame(), last_only=True)
        assert set(want["symbol"]) == {"SPX", "IXIC"}
        for j, symbol in enumerate(want["symbol"]):
            got = views[symbol]
            np.testing.assert_allclose([got.p_sell, got.p_hold, got.p_buy], want["probabilities"][j], rtol=1e-5)
            assert got.expected_return == pytest.approx(want["expected_return"][j], rel=1e-5, abs=1e-9)
            assert got.target == float(want["signal"][j])
            checked += 1
    assert checked >= 20


def test_transformer_scorer_multi_asset_needs_every_asset_at_the_bar(multi_asset: TransformerTrader):
    start, end = datetime(2015, 9, 1, tzinfo=UTC), datetime(2016, 4, 30, tzinfo=UTC)
    spx, ixic = bars("SPX", start, end), bars("IXIC", start, end)
    live, book = LiveFeatures(FEATURES), FeatureBook(LiveFeatures(FEATURES).columns, 64)
    for a, b in zip(spx[:-1], ixic[:-1], strict=True):
        feed(book, live, a)
        feed(book, live, b)
    feed(book, live, spx[-1])  # IXIC's last bar has not arrived
    scorer = TransformerScorer(multi_asset, book.columns)
    assert scorer.score(book, ["SPX"]) == {}
    feed(book, live, ixic[-1])
    assert set(scorer.score(book, ["SPX", "IXIC"])) == {"SPX", "IXIC"}


def test_transformer_scorer_single_asset_model_batches_mapped_symbols():
    trader = TransformerTrader(tiny_config(max_epochs=1), features=FEATURES, track=False)
    trader.train(offline_features(("SPX",), datetime(2012, 1, 1, tzinfo=UTC), datetime(2015, 1, 1, tzinfo=UTC)))
    start, end = datetime(2015, 9, 1, tzinfo=UTC), datetime(2016, 6, 30, tzinfo=UTC)
    live, book = LiveFeatures(FEATURES), FeatureBook(LiveFeatures(FEATURES).columns, 64)
    for bar in bars("SPX", start, end) + bars("IXIC", start, end):
        feed(book, live, bar)
    scorer = TransformerScorer(trader, book.columns, {"IXIC": "SPX"})
    views = scorer.score(book, ["SPX", "IXIC"])
    for symbol in ("SPX", "IXIC"):
        frame = book.frame([symbol]).assign(symbol="SPX")
        want = trader.predict(frame, last_only=True)
        got = views[symbol]
        np.testing.assert_allclose([got.p_sell, got.p_hold, got.p_buy], want["probabilities"][0], rtol=1e-5)


class AccountPolicy:
    """SB3's `predict` interface; the action depends on the newest feature and on the account (exposure and
    drawdown), so a scorer that carried the account wrongly would act differently."""

    def predict(self, obs, deterministic=True):
        obs = np.atleast_2d(obs).astype(np.float64)
        key = obs[:, -3] * 3.0 + obs[:, -2] * 2.0 + obs[:, -1] * 40.0
        return (np.floor(key * 5.0).astype(np.int64) % 3), None


def policy_spec(window: int = 5) -> ObservationSpec:
    names = ["ret_1", "ret_5", "rsi", "macd_hist", "volume_z"]
    offline = offline_features(("SPX",), datetime(2010, 1, 1, tzinfo=UTC), datetime(2014, 1, 1, tzinfo=UTC))
    market = market_arrays(offline, names, symbols=["SPX"], sigma_column="rvol_20")
    return ObservationSpec.fit(
        market,
        range(0, market.n_rows),
        env=EnvConfig(window_size=window).model_dump(mode="json"),
        reward=RewardConfig().model_dump(mode="json"),
        costs=CostConfig().model_dump(mode="json"),
        sigma_column="rvol_20",
    )


@pytest.mark.parametrize("policy_kind", ["account-dependent", "ppo", "dqn"])
def test_policy_scorer_carries_the_account_like_the_pyfunc_simulation(policy_kind: str):
    spec = policy_spec()
    if policy_kind in ("ppo", "dqn"):
        from stable_baselines3 import PPO

        from gpt_trader.ml.rl.dqn import EnhancedDQN
        from gpt_trader.ml.rl.env import TradingEnv
        from gpt_trader.ml.rl.policies import DuelingDQNPolicy

        env = TradingEnv.streaming(len(spec.feature_names), env_config=EnvConfig(window_size=spec.window_size))
        if policy_kind == "ppo":
            policy = PPO("MlpPolicy", env, seed=3, device="cpu")
        else:  # the DQN registered by training: dueling head, served through the same scorer
            import torch

            policy = EnhancedDQN(DuelingDQNPolicy, env, buffer_size=64, seed=3, device="cpu")
            with torch.no_grad():  # a random net whose greedy action moves with its inputs, the account included
                policy.q_net.advantage_net[-1].weight.mul_(60.0)
    else:
        policy = AccountPolicy()
    wrapper = TradingPolicyModel("dqn" if policy_kind == "dqn" else "ppo", spec)
    wrapper.model = policy
    series = bars("SPX", datetime(2015, 1, 1, tzinfo=UTC), datetime(2016, 6, 30, tzinfo=UTC))
    columns = LiveFeatures(FEATURES).columns
    live, book, full = LiveFeatures(FEATURES), FeatureBook(columns, 40), FeatureBook(columns, 10_000)
    scorer = None
    got: dict[datetime, float] = {}
    for bar in series:
        vector = live.update(bar)
        if vector is None:
            continue
        book.append(bar, vector)
        full.append(bar, vector)
        if full.total("SPX") < 60:
            continue
        if scorer is None:  # created with a full book: it starts flat at the book's oldest row, as the pyfunc does
            scorer = PolicyScorer(policy, spec, columns)
            first = book.ts("SPX")[0]
        got[bar.ts] = scorer.score(book, ["SPX"])["SPX"].target
    frame = full.frame(["SPX"])
    frame = frame[frame["ts"] >= np.datetime64(int(first), "ns")]
    want = wrapper.predict(None, frame)
    want = dict(zip(want["ts"].dt.tz_localize("UTC").dt.to_pydatetime(), want["position"], strict=True))
    assert len(got) > 250
    assert got == {ts: want[ts] for ts in got}
    if policy_kind in ("account-dependent", "dqn"):
        assert len(set(got.values())) == 3  # the policy really moved between short, flat and long


@pytest.mark.slow
def test_registered_models_are_unwrapped_and_a_hot_swap_serves_the_new_version(tmp_path, monkeypatch):
    """Real trained models through MLflow: `scorer_for` picks the fast scorers, and a promotion swaps them."""
    import mlflow

    from gpt_trader.ml.rl.train import train_rl_agent
    from gpt_trader.registry.models import promote, register_challenger
    from gpt_trader.serving.champion import ChampionSlot
    from gpt_trader.serving.scorers import scorer_for
    from gpt_trader.settings import load_settings
    from gpt_trader.trading.session import ModelRunner

    monkeypatch.chdir(tmp_path)
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("paths:\n" + "".join(f"  {k}: {tmp_path / k}\n" for k in ("data", "models", "mlflow")))
    settings = load_settings(overlay, params=ROOT / "params.yaml")
    start, end = datetime(2012, 1, 1, tzinfo=UTC), datetime(2015, 1, 1, tzinfo=UTC)
    train = offline_features(("SPX",), start, end)
    uris = []
    for seed in (0, 1):
        cfg = tiny_config(max_epochs=1, seed=seed)
        trader = TransformerTrader(cfg, features=FEATURES, registry=settings.registry, mlflow_dir=tmp_path / "mlflow")
        trader.train(train, enable_progress_bar=False, enable_model_summary=False)
        uris.append((trader.model_uri, trader))
    rl = settings.ml.reinforcement.model_copy(update={"total_timesteps": 256})
    rl = rl.model_copy(
        update={
            "ppo": rl.ppo.model_copy(update={"n_envs": 1, "n_steps": 128, "batch_size": 64, "n_epochs": 1}),
            "evaluation": rl.evaluation.model_copy(update={"seeds": (0,), "random_agent_runs": 1, "peer": False}),
        }
    )
    policy_uri = train_rl_agent(train, "ppo", rl, settings=settings)["model_uri"]
    columns = LiveFeatures(FEATURES).columns
    assert isinstance(scorer_for(mlflow.pyfunc.load_model(uris[0][0]), "transformer", columns), TransformerScorer)
    assert isinstance(scorer_for(mlflow.pyfunc.load_model(policy_uri), "rl", columns), PolicyScorer)

    live, book = LiveFeatures(FEATURES), FeatureBook(columns, 64)
    for bar in bars("SPX", datetime(2015, 6, 1, tzinfo=UTC), datetime(2016, 6, 30, tzinfo=UTC)):
        feed(book, live, bar)
    client = mlflow.MlflowClient()
    name = "swap-transformer"
    versions = [register_challenger(client, name, uri, {}) for uri, _ in uris]
    promote(client, name, versions[0], reason="test")
    runner = ModelRunner(ChampionSlot(name, client), "transformer")
    runner.slot.set_probe(lambda model: runner.probe(model, book))
    assert runner.slot.refresh()
    promote(client, name, versions[1], reason="test")
    assert runner.slot.refresh()
    call = runner.score(book, ["SPX"])["SPX"]
    assert call.version == versions[1]
    want = uris[1][1].predict(book.frame(), last_only=True)["probabilities"][0]
    got = call.transformer
    assert got is not None
    np.testing.assert_allclose([got.p_sell, got.p_hold, got.p_buy], want, rtol=1e-5)
