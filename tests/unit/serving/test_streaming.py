"""StreamingTransformerScorer (one cached step per symbol per bar) == the window scorer and the trader's own
predict, bar by bar on real SPX/IXIC/GOOGL bars, with symbols that miss bars, join late or fall behind."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from gpt_trader.ml.transformer.trader import TransformerTrader
from gpt_trader.serving.book import FeatureBook
from gpt_trader.serving.features import LiveFeatures
from gpt_trader.serving.scorers import ModelView, TransformerScorer
from gpt_trader.serving.streaming import StreamingTransformerScorer, streams
from tests.unit.ml.transformer.synthetic import tiny_config
from tests.unit.serving.test_scorers import FEATURES, bars, feed, offline_features

START, END = datetime(2015, 6, 1, tzinfo=UTC), datetime(2016, 6, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def sliding() -> TransformerTrader:
    """A single-asset SPX model with 2 layers of 4-bar sliding attention (receptive field 7 <= window 8)."""
    trader = TransformerTrader(
        tiny_config(max_epochs=1, n_layers=2, attention_window=4), features=FEATURES, track=False
    )
    trader.train(offline_features(("SPX",), datetime(2012, 1, 1, tzinfo=UTC), datetime(2015, 1, 1, tzinfo=UTC)))
    return trader


def assert_same(got: ModelView, want: ModelView) -> None:
    np.testing.assert_allclose(
        [got.p_sell, got.p_hold, got.p_buy, got.expected_return],
        [want.p_sell, want.p_hold, want.p_buy, want.expected_return],
        rtol=1e-4,
        atol=1e-6,
    )
    assert got.target == want.target or max(want.p_sell or 0, want.p_hold or 0, want.p_buy or 0) < 0.34


def test_streaming_scorer_equals_window_scorer_bar_by_bar_with_missed_and_late_symbols(sliding: TransformerTrader):
    symbols = {"SPX": bars("SPX", START, END), "IXIC": bars("IXIC", START, END), "GOOGL": bars("GOOGL", START, END)}
    mapping = {"IXIC": "SPX", "GOOGL": "SPX"}
    live, book = LiveFeatures(FEATURES), FeatureBook(LiveFeatures(FEATURES).columns, 32)
    stream, window = (
        StreamingTransformerScorer(sliding, book.columns, mapping),
        TransformerScorer(sliding, book.columns, mapping),
    )
    rng = np.random.default_rng(0)
    checked = caught_up = 0
    n = min(len(b) for b in symbols.values())
    for i in range(n):
        closed = []
        for symbol, tape in symbols.items():
            if symbol == "GOOGL" and i < 120:
                continue  # joins late: its first score replays the book
            feed(book, live, tape[i])
            closed.append(symbol)
        # IXIC is sometimes not scored for a few bars (its model call skipped): the stream catches up on them.
        scored = [s for s in closed if not (s == "IXIC" and rng.random() < 0.3)]
        rng.shuffle(scored)  # the bars of a timestamp come in any order: a stream's row is found by its symbol
        if "IXIC" in closed and "IXIC" not in scored:
            caught_up += 1
        got, want = stream.score(book, scored), window.score(book, scored)
        assert set(got) == set(want)
        for symbol, view in want.items():
            assert_same(got[symbol], view)
            checked += 1
    assert checked > 400
    assert caught_up > 20
    # Far behind (more bars than the book holds): the stream starts again from the book and still agrees.
    for bar in bars("IXIC", datetime(2016, 7, 1, tzinfo=UTC), datetime(2016, 10, 1, tzinfo=UTC)):
        feed(book, live, bar)
    assert_same(stream.score(book, ["IXIC"])["IXIC"], window.score(book, ["IXIC"])["IXIC"])
    # A second call on the same bar answers the same without stepping again.
    assert_same(stream.score(book, ["IXIC"])["IXIC"], window.score(book, ["IXIC"])["IXIC"])


def test_streaming_scorer_equals_trader_predict_on_the_book(sliding: TransformerTrader):
    live, book = LiveFeatures(FEATURES), FeatureBook(LiveFeatures(FEATURES).columns, 64)
    stream = StreamingTransformerScorer(sliding, book.columns)
    tape = bars("SPX", START, END)
    for k, bar in enumerate(tape):
        feed(book, live, bar)
        views = stream.score(book, ["SPX"])
        if k % 25 or not views:
            continue
        want = sliding.predict(book.frame(), last_only=True)
        got = views["SPX"]
        np.testing.assert_allclose([got.p_sell, got.p_hold, got.p_buy], want["probabilities"][0], rtol=1e-4)
        assert got.expected_return == pytest.approx(want["expected_return"][0], rel=1e-4, abs=1e-7)


def test_streaming_serves_only_single_asset_sliding_models(sliding: TransformerTrader):
    assert streams(sliding)
    full = TransformerTrader(tiny_config(max_epochs=1), features=FEATURES, track=False)
    full.train(offline_features(("SPX",), datetime(2013, 1, 1, tzinfo=UTC), datetime(2015, 1, 1, tzinfo=UTC)))
    assert not streams(full)  # full causal attention: a bar's output depends on where the window starts
    with pytest.raises(ValueError, match="attention_window"):
        StreamingTransformerScorer(full, LiveFeatures(FEATURES).columns)
