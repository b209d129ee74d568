"""Config section for the market transformer (bare constructor = the seed's GPU-sized defaults)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from gpt_trader.config_base import Section

Precision = Literal["auto", "32-true", "bf16-mixed", "16-mixed", "64-true"]


def receptive_field(n_layers: int, attention_window: int | None) -> int | None:
    """Bars one step's output depends on: each of `n_layers` sliding layers reaches `attention_window - 1` bars
    further back. None for full causal attention (the whole window)."""
    return None if attention_window is None else n_layers * (attention_window - 1) + 1


class TransformerEvaluationConfig(Section):
    """Walk-forward out-of-sample evaluation of the transformer on the bundled datasets."""

    # Symbols modelled together in one multi-asset model (they must share timestamps); one walk-forward per group.
    groups: list[list[str]] = Field(default_factory=lambda: [["SPX", "IXIC"], ["GOOGL"], ["EURUSD"]])
    # Out-of-sample test windows per group, keyed by timeframe ("1d", "1h"); fall back to `default`.
    folds: dict[str, int] = Field(default_factory=lambda: {"default": 3, "1h": 4})
    test_bars: dict[str, int] = Field(default_factory=lambda: {"default": 250, "1h": 1000})
    val_bars: dict[str, int] = Field(default_factory=lambda: {"default": 250, "1h": 500})
    min_train_bars: int = Field(default=500, gt=0)
    # Bars dropped between train, validation and test; at least the label horizon so no label spans a boundary.
    embargo_bars: int = Field(default=5, ge=0)
    expanding: bool = True
    # Epoch cap for each fold's model (None: the model's max_epochs); early stopping still applies.
    max_epochs: int | None = Field(default=None, gt=0)

    def for_timeframe(self, table: dict[str, int], timeframe: str) -> int:
        """Look up a per-timeframe value, falling back to the `default` key."""
        if timeframe in table:
            return table[timeframe]
        if "default" not in table:
            raise ValueError(f"no entry for timeframe {timeframe!r} and no 'default' in {table}")
        return table["default"]


class TransformerConfig(Section):
    """Market transformer hyper-parameters (seed defaults: d_model 512, 8 heads, 6 layers)."""

    d_model: int = Field(default=512, gt=0)
    n_heads: int = Field(default=8, gt=0)
    n_layers: int = Field(default=6, gt=0)
    max_seq_length: int = Field(default=100, gt=0)
    batch_size: int = Field(default=32, gt=0)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    learning_rate: float = Field(default=3e-4, gt=0)
    max_epochs: int = Field(default=20, gt=0)
    # Feed-forward width; None means 4 * d_model.
    d_ff: int | None = Field(default=None, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    # Loss = cross-entropy(Buy/Hold/Sell) + regression_weight * MSE(standardized forward return).
    regression_weight: float = Field(default=0.5, ge=0)
    # Attention across the assets at the same timestamp (only used with more than one asset).
    cross_asset_attention: bool = True
    # Sliding attention: each bar attends to itself and the attention_window - 1 bars before it, ordered by a
    # learned distance bias instead of absolute positions. A bar's output then depends on the last
    # n_layers * (attention_window - 1) + 1 bars only, not on where the window starts, so live serving steps each
    # symbol one bar at a time from cached keys (`MarketTransformer.step`) instead of re-running its window.
    # None: full causal attention over the window with absolute positions (models trained before it).
    attention_window: int | None = Field(default=None, ge=1)
    # Training windows start every `window_stride` bars; every step of a causal window carries a label, so a
    # stride below max_seq_length still sees each training label (with different amounts of context).
    window_stride: int = Field(default=8, gt=0)
    loss_on_all_steps: bool = True
    early_stopping_patience: int = Field(default=3, ge=1)
    gradient_clip_val: float = Field(default=1.0, ge=0)
    seed: int = 42
    # "auto": bf16-mixed on a CUDA GPU, 32-true on CPU.
    precision: Precision = "auto"
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    # torch intra-op threads (None: leave torch's default).
    num_threads: int | None = Field(default=None, gt=0)
    # When `.train` gets no validation frame: the last fraction of training rows (after an embargo) validates.
    val_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    # Symbols the `train transformer` stage models together (they must share timestamps and a timeframe).
    train_symbols: list[str] = Field(default_factory=lambda: ["SPX", "IXIC"], min_length=1)
    evaluation: TransformerEvaluationConfig = TransformerEvaluationConfig()

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        field = self.receptive_field
        if field is not None and field > self.max_seq_length:
            # The window's last step must see its whole receptive field, or a window prediction would differ
            # from the streamed one that live serving computes.
            raise ValueError(
                f"attention_window {self.attention_window} with {self.n_layers} layers sees "
                f"{field} bars, more than max_seq_length {self.max_seq_length}: lower attention_window to at "
                f"most {(self.max_seq_length - 1) // self.n_layers + 1} or raise max_seq_length"
            )
        return self

    @property
    def receptive_field(self) -> int | None:
        """Bars that one step's output depends on with sliding attention (None: the whole window)."""
        return receptive_field(self.n_layers, self.attention_window)

    @property
    def feedforward_dim(self) -> int:
        """Width of the position-wise feed-forward block."""
        return self.d_ff or 4 * self.d_model
