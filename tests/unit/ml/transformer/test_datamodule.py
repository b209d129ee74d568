from __future__ import annotations

import numpy as np
import pytest
import torch

from gpt_trader.core.errors import DataError
from gpt_trader.ml.transformer.datamodule import MarketDataModule, WindowDataset, window_ends
from gpt_trader.ml.transformer.panel import IGNORE_INDEX, Normalizer, build_panel
from tests.unit.ml.transformer.synthetic import COLUMNS, synthetic_features


def panel_and_normalizer(n: int = 60):
    panel = build_panel(synthetic_features(n), COLUMNS)
    return panel, Normalizer.fit(panel)


def test_window_dataset_window_ending_at_t_holds_rows_up_to_t_and_label_at_t():
    panel, norm = panel_and_normalizer()
    seq = 8
    ends = window_ends(len(panel), seq)
    data = WindowDataset(panel, norm, seq, ends)
    z = norm.transform(panel.features)
    for i in (0, 5, len(ends) - 1):
        t = int(ends[i])
        item = data[i]
        np.testing.assert_array_equal(item["x"].numpy(), z[t - seq + 1 : t + 1])
        assert item["labels"][-1].item() == panel.labels[t, 0]
        assert (item["labels"][:-1] == IGNORE_INDEX).all()  # last step only by default


def test_window_dataset_future_rows_changed_window_unchanged():
    panel, norm = panel_and_normalizer()
    seq, t = 8, 30
    data = WindowDataset(panel, norm, seq, np.array([t]))
    before = data[0]["x"].clone()
    panel.features[t + 1 :] += 99.0  # perturb only the future
    after = WindowDataset(panel, norm, seq, np.array([t]))[0]["x"]
    torch.testing.assert_close(before, after)


def test_window_dataset_label_start_masks_context_rows():
    panel, norm = panel_and_normalizer()
    data = WindowDataset(panel, norm, 8, np.array([20]), label_start=18, all_steps=True)
    item = data[0]
    # Window rows 13..20: rows < 18 are context only.
    assert (item["labels"][:5] == IGNORE_INDEX).all()
    assert (item["labels"][5:] != IGNORE_INDEX).all()
    assert not item["target_mask"][:5].any()


def test_window_ends_strided_includes_last_row():
    ends = window_ends(50, 8, stride=16)
    assert ends[0] == 7
    assert ends[-1] == 49
    assert np.all(np.diff(ends) > 0)


def test_window_ends_too_few_rows_raises():
    with pytest.raises(DataError, match="too few"):
        window_ends(5, 8)


def test_market_datamodule_validation_windows_labelled_only_in_validation_range():
    panel, norm = panel_and_normalizer(80)
    dm = MarketDataModule(panel.rows(0, 40), panel.rows(43, 80), norm, seq_len=8, batch_size=4, val_label_start=7)
    dm.setup()
    assert dm.val_set is not None
    assert dm.train_set is not None
    assert len(dm.val_set) == 80 - 43 - 7
    batch = next(iter(dm.val_dataloader()))
    assert (batch["labels"][:, :-1] == IGNORE_INDEX).all()
    train_batch = next(iter(dm.train_dataloader()))
    assert train_batch["x"].shape == (4, 8, 1, len(COLUMNS))
    assert (train_batch["labels"] != IGNORE_INDEX).all()  # every step of a training window is labelled
