"""Attention heatmaps: where the prediction at the end of a window looked within it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gpt_trader.core.fs import atomic_path


def plot_attention(
    attention: npt.NDArray[Any], path: str | Path, *, title: str = "Attention of the last step over the window"
) -> Path:
    """Write a PNG heatmap of attention (layers, heads, T): one row per layer/head, columns are bars back in time.

    The rightmost column is the predicted bar itself; every row sums to 1 (causal softmax over the window).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = np.asarray(attention, dtype=float)
    if weights.ndim != 3:
        raise ValueError(f"attention must be (layers, heads, window), got shape {weights.shape}")
    layers, heads, steps = weights.shape
    rows = weights.reshape(layers * heads, steps)
    fig, ax = plt.subplots(figsize=(min(14, 4 + steps * 0.08), 1.5 + 0.3 * layers * heads))
    image = ax.imshow(rows, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(layers * heads), [f"L{layer} H{head}" for layer in range(layers) for head in range(heads)])
    ticks = np.linspace(0, steps - 1, min(steps, 9)).round().astype(int)
    ax.set_xticks(ticks, [str(t - (steps - 1)) for t in ticks])
    ax.set_xlabel("bar relative to the predicted bar (0 = now)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="attention weight")
    fig.tight_layout()
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return target
