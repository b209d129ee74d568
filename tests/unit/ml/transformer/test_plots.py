from __future__ import annotations

import numpy as np
import pytest

from gpt_trader.ml.transformer.plots import plot_attention


def test_plot_attention_writes_png(tmp_path):
    weights = np.random.default_rng(0).dirichlet(np.ones(16), size=(2, 4))
    path = plot_attention(weights, tmp_path / "a" / "attention.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_attention_wrong_rank_raises(tmp_path):
    with pytest.raises(ValueError, match="layers, heads, window"):
        plot_attention(np.ones((4, 4)), tmp_path / "x.png")
