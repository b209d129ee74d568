"""Attention over time biased by volume and volatility, and attention across assets at one timestamp."""

from __future__ import annotations

import math
from typing import NamedTuple

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
    def __init__(self, d_model: int, n_heads: int, window: int | None = None) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if window is not None and window < 1:
            raise ValueError(f"attention window must be at least 1 bar, got {window}")
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.window = window
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        # Small MLP so the bias can be non-linear in volume and volatility (e.g. only extreme volume matters).
        self.market_bias = nn.Sequential(nn.Linear(N_MARKET, 16), nn.GELU(), nn.Linear(16, n_heads))
        # Sliding attention orders bars by a learned per-head bias of the distance i - j (0 .. window-1) instead
        # of absolute positions, so a bar's output does not depend on where the window starts.
        self.distance_bias = nn.Parameter(torch.zeros(n_heads, window)) if window is not None else None

    def band(self, steps: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
        """Sliding-window additive mask (H, T, T): the distance bias for 0 <= i - j < window, -inf elsewhere;
        None for full causal attention. Shared by every window of a batch, so it costs H*T*T floats once."""
        if self.window is None or self.distance_bias is None:
            return None
        i = torch.arange(steps, device=device)
        distance = i[:, None] - i[None, :]
        inside = (distance >= 0) & (distance < self.window)
        table = self.distance_bias.to(dtype)[:, distance.clamp(0, self.window - 1)]  # (H, T, T)
        return table.masked_fill(~inside, float("-inf"))

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
        band = self.band(t, q.dtype, x.device)
        if return_weights:
            # Explicit path for interpretation: the same scores with an additive causal (or band) + bias mask.
            if band is None:
                band = torch.full((t, t), float("-inf"), device=x.device, dtype=q.dtype).triu(1)
            scores = q @ k.transpose(-1, -2) * scale + band + bias.unsqueeze(2)
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
                attn_mask=None if band is None else band.unsqueeze(0),
                is_causal=band is None,
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
        mask = self.bias(market).to(q.dtype).unsqueeze(2)  # (N, H, 1, T)
        band = self.band(t, q.dtype, x.device)
        if band is not None:
            mask = mask + band[:, -1:]
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=1.0 / math.sqrt(self.d_head)
        )  # (N, H, 1, d_head)
        return self.out(attended.reshape(n, d))

    def step(
        self, x: torch.Tensor, market: torch.Tensor, cache: KeyCache, layer: int, slots: StepSlots
    ) -> torch.Tensor:
        """One new bar per stream with sliding attention: x (N, d), market (N, 2) -> output (N, d).

        The bar's key, value and market bias go into layer `layer` of `cache` at `slots` (from `KeyCache.advance`),
        and its query attends to the stream's last `window` bars with the distance bias: row i of `forward`'s
        band, without recomputing any earlier bar.
        """
        if self.distance_bias is None:
            raise RuntimeError("step() needs sliding attention (a window); full causal attention re-runs windows")
        n, d = x.shape
        q, k, v = self.qkv(x).view(n, 3, self.n_heads, self.d_head).unbind(1)  # each (N, H, d_head)
        keys, values, bias = cache.write(layer, slots, k, v, self.bias(market[:, None]).squeeze(-1))
        mask = bias + self.distance_bias[:, slots.distance].transpose(0, 1) + slots.blocked
        # Plain batched matmuls: for one query per stream they beat the fused kernel's setup cost here.
        scores = (q.unsqueeze(2) @ keys.transpose(-1, -2)).squeeze(2) * (1.0 / math.sqrt(self.d_head)) + mask
        attended = (scores.softmax(-1).unsqueeze(2) @ values).squeeze(2)  # (N, H, d_head)
        return self.out(attended.reshape(n, d))


class StepSlots(NamedTuple):
    """Where one step writes, shared by every layer: the streams' cache rows as given (None: all, in order)
    and as an index (`at`), their ring slots (N,), each slot's distance in bars from the new one (N, W), and
    0 / -inf for filled / empty slots (N, 1, W). When every stream of the cache steps and all are at the same
    bar count (the usual live bar), `slot` is that one int, `at` None, and `distance`/`blocked` are (1, W) and
    (1, 1, W): plain slices instead of gathers and scatters."""

    rows: torch.Tensor | None
    at: torch.Tensor | None
    slot: torch.Tensor | int
    distance: torch.Tensor
    blocked: torch.Tensor


class KeyCache:
    """Ring buffers of the last `window` keys, values and market biases of S streams, for every layer.

    A stream's bar number c (counting from 0 since its reset) lives in slot c % window, so a step writes one slot
    per stream and layer instead of shifting the buffers.
    """

    def __init__(self, streams: int, n_layers: int, n_heads: int, window: int, d_head: int) -> None:
        self.window = window
        self.keys = torch.zeros(n_layers, streams, n_heads, window, d_head)
        self.values = torch.zeros(n_layers, streams, n_heads, window, d_head)
        self.bias = torch.zeros(n_layers, streams, n_heads, window)
        self.count = torch.zeros(streams, dtype=torch.long)
        # The bar count every stream shares, when they all share one (known without looking at `count`).
        self._sync: int | None = 0
        slots = torch.arange(window)
        # _distance[w, s]: how many bars before the one in slot w the bar in slot s is.
        self._distance = (slots[:, None] - slots[None, :]) % window

    @property
    def streams(self) -> int:
        """Streams the cache holds."""
        return len(self.count)

    def advance(self, rows: torch.Tensor | None) -> StepSlots:
        """Start a step for streams `rows` (None: all): their slots for the new bar, counted as written."""
        if rows is None and self._sync is None and self.streams and bool((self.count == self.count[0]).all()):
            self._sync = int(self.count[0])  # back in step (e.g. all streams caught up on the same rows)
        if rows is None and self._sync is not None:
            shared, self._sync = self._sync, self._sync + 1
            self.count += 1
            at = shared % self.window
            filled = torch.zeros(1, 1, self.window)
            filled[..., shared + 1 :] = float("-inf")
            return StepSlots(None, None, at, self._distance[at : at + 1], filled)
        self._sync = None
        index = rows if rows is not None else torch.arange(self.streams)
        count = self.count[index]
        slot = count % self.window
        self.count[index] = count + 1
        empty = torch.arange(self.window)[None, :] > count[:, None]
        blocked = torch.zeros(empty.shape).masked_fill_(empty, float("-inf")).unsqueeze(1)
        return StepSlots(rows, index, slot, self._distance[slot], blocked)

    def write(
        self, layer: int, slots: StepSlots, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Store layer `layer`'s k/v (N, H, d_head) and bias (N, H) of the new bar; return those streams' keys,
        values (N, H, W, d_head) and biases (N, H, W)."""
        keys, values, biases = self.keys[layer], self.values[layer], self.bias[layer]
        if slots.at is None:
            keys[:, :, slots.slot] = k
            values[:, :, slots.slot] = v
            biases[:, :, slots.slot] = bias
            return keys, values, biases
        keys[slots.at, :, slots.slot] = k
        values[slots.at, :, slots.slot] = v
        biases[slots.at, :, slots.slot] = bias
        if slots.rows is None:
            return keys, values, biases
        return keys[slots.at], values[slots.at], biases[slots.at]

    def reset(self, rows: torch.Tensor) -> None:
        """Empty streams `rows`: they start again from their next bar."""
        self.count[rows] = 0
        self._sync = None

    def resized(self, streams: int) -> KeyCache:
        """A cache for `streams` streams holding this one's streams first (new ones empty)."""
        n_layers, _, n_heads, window, d_head = self.keys.shape
        out = KeyCache(streams, n_layers, n_heads, window, d_head)
        kept = min(streams, self.streams)
        out.keys[:, :kept], out.values[:, :kept] = self.keys[:, :kept], self.values[:, :kept]
        out.bias[:, :kept], out.count[:kept] = self.bias[:, :kept], self.count[:kept]
        out._sync = None if kept else 0
        return out


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
