"""Attention over time biased by volume and volatility, and attention across assets at one timestamp."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Market inputs of the bias: (normalized log-volume z-score, normalized realized volatility).
N_MARKET = 2


class MarketAttention(nn.Module):
    """Causal multi-head self-attention whose scores carry a learned per-head bias from volume and volatility.

    score[h, i, j] = q_i . k_j / sqrt(d_head) + bias_h(volume_j, volatility_j), j <= i. The bias is a function of
    the attended (key) bar, so heads can learn to attend to high-volume or high-volatility bars. It is added
    inside `scaled_dot_product_attention` by appending one column to queries (a constant sqrt(d_head)) and keys
    (the bias): the fused causal kernel then adds exactly the bias, and no (T, T) mask is ever materialized,
    so memory stays linear in the window length.
    """

    # No dropout on the attention weights: it forces SDPA off its fused CPU kernel (5x slower training here);
    # the layer's residual and feed-forward dropout regularize instead.
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        # Small MLP so the bias can be non-linear in volume and volatility (e.g. only extreme volume matters).
        self.market_bias = nn.Sequential(nn.Linear(N_MARKET, 16), nn.GELU(), nn.Linear(16, n_heads))

    def bias(self, market: torch.Tensor) -> torch.Tensor:
        """Per-head additive score bias of each key bar: market (N, T, 2) -> (N, H, T)."""
        return self.market_bias(market).transpose(1, 2)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, t, _ = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        return q, k, v

    def forward(
        self, x: torch.Tensor, market: torch.Tensor, *, return_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (N, T, d), market: (N, T, 2) -> (output (N, T, d), weights (N, H, T, T) or None)."""
        n, t, d = x.shape
        q, k, v = self._heads(x)
        bias = self.bias(market).to(q.dtype)
        scale = 1.0 / math.sqrt(self.d_head)
        weights = None
        if return_weights:
            # Explicit path for interpretation: the same scores with an additive causal + bias mask.
            causal = torch.full((t, t), float("-inf"), device=x.device, dtype=q.dtype).triu(1)
            scores = q @ k.transpose(-1, -2) * scale + causal + bias.unsqueeze(2)
            weights = scores.softmax(dim=-1)
            attended = weights @ v
        else:
            ones = torch.full((n, self.n_heads, t, 1), math.sqrt(self.d_head), device=x.device, dtype=q.dtype)
            q_aug = torch.cat([q, ones], dim=-1)
            k_aug = torch.cat([k, bias.unsqueeze(-1)], dim=-1)
            v_aug = torch.cat([v, torch.zeros_like(ones)], dim=-1)
            attended = F.scaled_dot_product_attention(
                q_aug,
                k_aug,
                v_aug,
                is_causal=True,
                scale=scale,
            )[..., : self.d_head]
        return self.out(attended.transpose(1, 2).reshape(n, t, d)), weights

    def forward_last(self, x: torch.Tensor, market: torch.Tensor) -> torch.Tensor:
        """The output at the last step only: x (N, T, d), market (N, T, 2) -> (N, d).

        The last query attends to every key (nothing is after it), so no causal mask is needed; only its query
        and the keys/values are projected. Equal to `forward(...)[0][:, -1]` up to float rounding.
        """
        n, t, d = x.shape
        w, b = self.qkv.weight, self.qkv.bias
        q = F.linear(x[:, -1:], w[:d], b[:d]).view(n, 1, self.n_heads, self.d_head).transpose(1, 2)
        kv = F.linear(x, w[d:], b[d:]).view(n, t, 2, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        bias = self.bias(market).to(q.dtype)  # (N, H, T)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.unsqueeze(2), scale=1.0 / math.sqrt(self.d_head)
        )  # (N, H, 1, d_head)
        return self.out(attended.reshape(n, d))


class CrossAssetAttention(nn.Module):
    """Multi-head attention among the assets at one timestamp (all of them are known at that time)."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (M, A, d) -> (M, A, d), M = batch * time."""
        m, a, d = x.shape
        q, k, v = self.qkv(x).view(m, a, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v)
        return self.out(attended.transpose(1, 2).reshape(m, a, d))
