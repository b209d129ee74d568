"""Sinusoidal position plus a learned encoding of market time (minute of day, day of week, session flags)."""

from __future__ import annotations

import math

import torch
from torch import nn

# Calendar inputs, in the order of `gpt_trader.data.features.CALENDAR_COLUMNS`.
N_CALENDAR = 5
_MINUTES_PER_DAY = 1440.0


def sinusoidal_table(length: int, d_model: int) -> torch.Tensor:
    """The (length, d_model) sine/cosine position table of Vaswani et al."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10_000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)[:, : d_model // 2]
    return table


def calendar_features(calendar: torch.Tensor) -> torch.Tensor:
    """Map raw calendar columns (..., 5) to cyclic features (..., 7): time of day and weekday on circles, flags."""
    minute, weekday, flags = calendar[..., 0], calendar[..., 1], calendar[..., 2:]
    day_angle = 2 * math.pi * minute / _MINUTES_PER_DAY
    week_angle = 2 * math.pi * weekday / 7.0
    cyclic = torch.stack([day_angle.sin(), day_angle.cos(), week_angle.sin(), week_angle.cos()], dim=-1)
    return torch.cat([cyclic, flags], dim=-1)


class PositionalEncoding(nn.Module):
    """Adds a fixed sinusoidal position (index within the window) and a learned projection of market time.

    Market time is what a plain position cannot know: 23:00 UTC on a Friday and 14:00 on a Tuesday behave
    differently, and a window of daily bars spans weekdays.
    """

    def __init__(self, d_model: int, max_len: int = 1000, dropout: float = 0.0, *, absolute: bool = True) -> None:
        super().__init__()
        self.max_len = max_len
        # Off for sliding attention, whose distance bias orders the bars: an index within the window would make
        # a bar's encoding depend on where the window starts.
        self.absolute = absolute
        self.register_buffer("position", sinusoidal_table(max_len, d_model), persistent=False)
        self.temporal = nn.Linear(N_CALENDAR + 2, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, calendar: torch.Tensor) -> torch.Tensor:
        """x: (B, T, A, d) token embeddings; calendar: (B, T, 5) raw calendar columns, shared by the assets."""
        steps = x.shape[1]
        if steps > self.max_len:
            raise ValueError(f"window of {steps} steps exceeds the encoding's max_len {self.max_len}")
        temporal = self.temporal(calendar_features(calendar.to(x.dtype)))
        if self.absolute:
            position: torch.Tensor = self.position[:steps]  # type: ignore[index]
            temporal = position.unsqueeze(0) + temporal
        return self.dropout(x + temporal.unsqueeze(2))
