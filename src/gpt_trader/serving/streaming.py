"""Serving a sliding-attention transformer one bar per symbol per step, from cached keys and values.

`TransformerScorer` re-runs each symbol's whole window on every bar: at 50 symbols and a 64-bar window that is
3,200 tokens through the model per bar timestamp, ~10 ms of compute on one core. With sliding attention
(`TransformerConfig.attention_window`) a bar's output depends only on the model's receptive field, not on where
the window starts, so the keys and values of earlier bars stay valid: `StreamingTransformerScorer` keeps them per
symbol (`KeyCache`) and runs only the new bar through the model, one batched `MarketTransformer.step` for all the
symbols of a timestamp (about 50 tokens instead of 3,200).

A symbol seen for the first time, or one that fell further behind than the book holds, is replayed from the
book's rows (at least `max_seq_length` of them, more than the receptive field), so its next output equals the
window scorer's on the same rows: `tests/unit/serving/test_streaming.py` checks it bar by bar.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from gpt_trader.data.features import CALENDAR_COLUMNS
from gpt_trader.serving.book import FeatureBook
from gpt_trader.serving.scorers import ModelView, _indices, transformer_views


def streams(trader: Any) -> bool:
    """Whether a `TransformerTrader` can be served by `StreamingTransformerScorer` (single asset, sliding)."""
    model = getattr(trader, "model", None)
    return model is not None and getattr(model, "attention_window", None) is not None and len(trader.symbols) == 1


class StreamingTransformerScorer:
    """A single-asset sliding-attention `TransformerTrader` stepped one bar per symbol per timestamp."""

    def __init__(self, trader: Any, columns: Sequence[str], symbol_map: Mapping[str, str] | None = None) -> None:
        if not streams(trader):
            raise ValueError("streaming serves single-asset transformers trained with attention_window")
        self.model, self.normalizer = trader.model, trader.normalizer
        self.asset: str = trader.symbols[0]
        # The same readiness rule as the window scorer: a symbol is scored once the book holds a full window.
        self.seq_len = int(trader.config.max_seq_length)
        self.feature_idx = _indices(columns, trader.columns, "the transformer")
        self.calendar_idx = _indices(columns, CALENDAR_COLUMNS, "the transformer")
        self.symbol_map = dict(symbol_map or {})
        self._stream: dict[str, int] = {}  # symbol -> its stream (row) in the cache; in stream order
        self._seen: dict[str, int] = {}  # symbol -> book rows (FeatureBook.total) it has stepped through
        self._views: dict[str, ModelView] = {}  # the latest view per symbol, for a repeated call on one bar
        self._cache = self.model.new_cache(0)

    def score(self, book: FeatureBook, symbols: Sequence[str]) -> dict[str, ModelView]:
        """Step every served symbol through the book rows it has not seen; its view at its newest row."""
        totals = book.totals(symbols)
        if (
            len(symbols) == len(self._stream)
            and all(t == self._seen.get(s, -2) + 1 for s, t in zip(symbols, totals, strict=True))
            and len(set(symbols)) == len(symbols)
        ):
            # The usual bar: every stream (in any order) one new row: one gather in stream order, one step.
            self._seen.update(zip(symbols, totals, strict=True))
            order = list(self._stream)
            views = self._step(order, book.latest(order)[0], None)
            self._views.update(views)
            return views
        pending: dict[str, npt.NDArray[np.float64]] = {}
        for symbol, total in zip(symbols, totals, strict=True):
            if self.symbol_map.get(symbol, symbol) != self.asset or book.size(symbol) < self.seq_len:
                continue
            stream = self._stream_of(symbol)
            missing = total - self._seen.get(symbol, 0)
            if symbol not in self._seen or missing > book.size(symbol):
                # New, or behind by more than the book holds: start again from the book's oldest row.
                self._cache.reset(torch.tensor([stream]))
                missing = book.size(symbol)
            self._seen[symbol] = total
            if missing > 0:
                pending[symbol] = book.vectors(symbol, missing)
        steps = max((len(rows) for rows in pending.values()), default=0)
        for j in range(steps):
            # Symbols with fewer rows to catch up join at the end, so every symbol's newest row is the last step.
            batch = [s for s, rows in pending.items() if j >= steps - len(rows)]
            vectors = np.stack([pending[s][j - (steps - len(pending[s]))] for s in batch])
            streams = [self._stream[s] for s in batch]
            # Every stream stepping, in order: no gather/scatter of the cache.
            rows = None if streams == list(range(len(self._stream))) else torch.tensor(streams)
            self._views.update(self._step(batch, vectors, rows, views=j == steps - 1))
        return {s: self._views[s] for s in symbols if s in self._views and s in self._seen}

    def _step(
        self, symbols: Sequence[str], vectors: npt.NDArray[np.float64], rows: torch.Tensor | None, views: bool = True
    ) -> dict[str, ModelView]:
        """One model step of `symbols` (cache rows `rows`, None: all in order) on their feature rows (N, F); their
        views when `views` (a catch-up's earlier steps only fill the cache)."""
        features = self.normalizer.transform(vectors[:, self.feature_idx].astype(np.float32))[:, None, :]
        calendar = np.ascontiguousarray(vectors[:, self.calendar_idx], dtype=np.float32)
        with torch.inference_mode():
            logits, ret = self.model.step(torch.from_numpy(features), torch.from_numpy(calendar), self._cache, rows)
        if not views:
            return {}
        probs = logits.softmax(-1).numpy().astype(np.float64)
        expected = ret.numpy().astype(np.float64) * self.normalizer.target_std + self.normalizer.target_mean
        return dict(zip(symbols, transformer_views(probs[:, 0], expected[:, 0]), strict=True))

    def _stream_of(self, symbol: str) -> int:
        stream = self._stream.get(symbol)
        if stream is None:
            stream = self._stream[symbol] = len(self._stream)
            # Sized to the symbols served so that a bar of all of them steps the cache whole (a copy per new
            # symbol, once).
            self._cache = self._cache.resized(len(self._stream))
        return stream
