"""`MarketTransformer`: a causal multi-asset transformer with Buy/Hold/Sell and forward-return heads.

Input is a panel window: features (B, T, A, F) for A assets over T bars, and the calendar (B, T, 5) the assets
share. Each layer attends over time within each asset (causal, volume/volatility-biased), then across assets
at the same timestamp, then applies a feed-forward block; all sub-blocks are pre-norm residuals.
"""

from __future__ import annotations

import torch
from torch import nn

from gpt_trader.ml.transformer.attention import CrossAssetAttention, KeyCache, MarketAttention, StepSlots
from gpt_trader.ml.transformer.config import receptive_field
from gpt_trader.ml.transformer.encoding import PositionalEncoding

N_CLASSES = 3  # class index = label + 1: 0 Sell, 1 Hold, 2 Buy
# Sequences up to this many steps are supported whatever max_seq_length says (the seed's memory claim).
MIN_MAX_LEN = 1000


class MarketTransformerLayer(nn.Module):
    """One layer: temporal market attention, cross-asset attention, feed-forward."""

    def __init__(
        self, d_model: int, n_heads: int, d_ff: int, dropout: float, cross_asset: bool, window: int | None = None
    ) -> None:
        super().__init__()
        self.norm_time = nn.LayerNorm(d_model)
        self.time_attention = MarketAttention(d_model, n_heads, window)
        self.norm_asset = nn.LayerNorm(d_model) if cross_asset else None
        self.asset_attention = CrossAssetAttention(d_model, n_heads) if cross_asset else None
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, h: torch.Tensor, market: torch.Tensor, *, return_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """h: (B, T, A, d), market: (B*A, T, 2) -> (h, temporal attention weights (B, A, H, T, T) or None)."""
        b, t, a, d = h.shape
        per_asset = self.norm_time(h).permute(0, 2, 1, 3).reshape(b * a, t, d)
        attended, weights = self.time_attention(per_asset, market, return_weights=return_weights)
        h = h + self.dropout(attended.view(b, a, t, d).permute(0, 2, 1, 3))
        if self.asset_attention is not None and self.norm_asset is not None and a > 1:
            across = self.asset_attention(self.norm_asset(h).reshape(b * t, a, d))
            h = h + self.dropout(across.view(b, t, a, d))
        h = h + self.dropout(self.ff(self.norm_ff(h)))
        if weights is not None:
            weights = weights.view(b, a, *weights.shape[1:])
        return h, weights

    def forward_last(self, h: torch.Tensor, market: torch.Tensor) -> torch.Tensor:
        """The layer's output at the last step only (what serving reads from the final layer): (B, A, d)."""
        b, t, a, d = h.shape
        per_asset = self.norm_time(h).permute(0, 2, 1, 3).reshape(b * a, t, d)
        last = h[:, -1] + self.dropout(self.time_attention.forward_last(per_asset, market).view(b, a, d))
        if self.asset_attention is not None and self.norm_asset is not None and a > 1:
            last = last + self.dropout(self.asset_attention(self.norm_asset(last)))
        return last + self.dropout(self.ff(self.norm_ff(last)))

    def step(
        self, h: torch.Tensor, market: torch.Tensor, cache: KeyCache, layer: int, slots: StepSlots
    ) -> torch.Tensor:
        """One new bar per stream (sliding attention): h (N, A, d), market (N*A, 2) -> the layer's output."""
        n, a, d = h.shape
        attended = self.time_attention.step(self.norm_time(h).reshape(n * a, d), market, cache, layer, slots)
        h = h + attended.view(n, a, d)
        if self.asset_attention is not None and self.norm_asset is not None and a > 1:
            h = h + self.asset_attention(self.norm_asset(h))
        return h + self.ff(self.norm_ff(h))


class MarketTransformer(nn.Module):
    """Causal transformer over a multi-asset window: per-step class logits and forward-return forecasts.

    `market_features` are the indices, within the F input features, of the normalized log-volume and realized
    volatility columns that bias the temporal attention.

    `attention_window` W makes the temporal attention a sliding window (each bar attends to itself and the W-1
    bars before it) with relative positions (a learned distance bias) instead of absolute ones. Then a bar's
    output depends only on the `receptive_field` = n_layers * (W - 1) + 1 bars ending at it, not on where the
    window starts, and `step` serves a stream one bar at a time from cached keys and values (`new_cache`) with
    the same result as the last step of a window: what live serving of many symbols needs.
    """

    def __init__(
        self,
        n_features: int,
        n_assets: int = 1,
        *,
        d_model: int = 512,
        n_heads: int = 8,
        n_layers: int = 6,
        d_ff: int | None = None,
        dropout: float = 0.1,
        max_seq_length: int = 100,
        market_features: tuple[int, int] = (0, 1),
        cross_asset_attention: bool = True,
        attention_window: int | None = None,
    ) -> None:
        super().__init__()
        if not all(0 <= i < n_features for i in market_features):
            raise ValueError(f"market_features {market_features} out of range for {n_features} features")
        self.n_features = n_features
        self.n_assets = n_assets
        self.market_features = tuple(market_features)
        self.max_len = max(MIN_MAX_LEN, max_seq_length)
        self.attention_window = attention_window
        self.input = nn.Linear(n_features, d_model)
        self.asset_embedding = nn.Embedding(n_assets, d_model)
        self.encoding = PositionalEncoding(d_model, self.max_len, dropout, absolute=attention_window is None)
        self.layers = nn.ModuleList(
            MarketTransformerLayer(
                d_model, n_heads, d_ff or 4 * d_model, dropout, cross_asset_attention, attention_window
            )
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.classifier = nn.Linear(d_model, N_CLASSES)
        self.regressor = nn.Linear(d_model, 1)

    def _embed(self, x: torch.Tensor, calendar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoded tokens (B, T, A, d) and the attention bias inputs (B*A, T, 2) of a checked input."""
        b, t, a, f = x.shape
        if f != self.n_features or a != self.n_assets:
            raise ValueError(
                f"expected (B, T, {self.n_assets} assets, {self.n_features} features), got {tuple(x.shape)}"
            )
        market = x[..., list(self.market_features)].permute(0, 2, 1, 3).reshape(b * a, t, 2)
        assets = torch.arange(a, device=x.device)
        return self.encoding(self.input(x) + self.asset_embedding(assets), calendar), market

    def _run(
        self, x: torch.Tensor, calendar: torch.Tensor, return_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        h, market = self._embed(x, calendar)
        weights = []
        for layer in self.layers:
            h, w = layer(h, market, return_weights=return_weights)
            if w is not None:
                weights.append(w)
        h = self.norm(h)
        return self.classifier(h), self.regressor(h).squeeze(-1), weights

    def forward_last(self, x: torch.Tensor, calendar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs at the last step only: logits (B, A, 3), standardized return forecast (B, A).

        Serving needs nothing else, so the final layer runs its query, feed-forward and heads for one step:
        about 40% less work than `forward` at two layers, equal to `forward(...)[:, -1]` up to float rounding.
        """
        h, market = self._embed(x, calendar)
        *body, final = self.layers
        for layer in body:
            h, _ = layer(h, market)
        assert isinstance(final, MarketTransformerLayer)
        last = self.norm(final.forward_last(h, market))
        return self.classifier(last), self.regressor(last).squeeze(-1)

    @property
    def receptive_field(self) -> int | None:
        """Bars that a step's output depends on with sliding attention (None: the whole window)."""
        return receptive_field(len(self.layers), self.attention_window)

    def new_cache(self, n_streams: int) -> KeyCache:
        """An empty key cache of every layer for `n_streams` streams (each a batch row of A assets) for `step`."""
        if self.attention_window is None:
            raise RuntimeError("step() needs sliding attention: this model was built without attention_window")
        first = self.layers[0]
        assert isinstance(first, MarketTransformerLayer)
        heads, d_head = first.time_attention.n_heads, first.time_attention.d_head
        return KeyCache(n_streams * self.n_assets, len(self.layers), heads, self.attention_window, d_head)

    def step(
        self, x: torch.Tensor, calendar: torch.Tensor, cache: KeyCache, streams: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The next bar of N streams: x (N, A, F), calendar (N, 5) -> logits (N, A, 3), return forecast (N, A).

        `streams` (N,) says which of the cache's streams the rows are (None: all of them, in order). Once a
        stream has stepped through `receptive_field` bars, its output equals `forward_last` on any window ending
        at this bar that holds them (up to float rounding); `cache` (from `new_cache`) advances.
        """
        h, market = self._embed(x.unsqueeze(1), calendar.unsqueeze(1))
        h = h.squeeze(1)
        market = market.squeeze(1)
        rows = None
        if streams is not None:  # a stream's A assets are A consecutive cache rows
            a = self.n_assets
            rows = (streams[:, None] * a + torch.arange(a)[None, :]).reshape(-1)
        slots = cache.advance(rows)
        for i, layer in enumerate(self.layers):
            assert isinstance(layer, MarketTransformerLayer)
            h = layer.step(h, market, cache, i, slots)
        h = self.norm(h)
        return self.classifier(h), self.regressor(h).squeeze(-1)

    def forward(self, x: torch.Tensor, calendar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, A, F), calendar (B, T, 5) -> (logits (B, T, A, 3), standardized return forecast (B, T, A))."""
        logits, expected, _ = self._run(x, calendar, return_weights=False)
        return logits, expected

    def forward_with_attention(
        self, x: torch.Tensor, calendar: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As `forward`, plus temporal attention weights (layers, B, A, heads, T, T) for interpretation."""
        logits, expected, weights = self._run(x, calendar, return_weights=True)
        return logits, expected, torch.stack(weights)
