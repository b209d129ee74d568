"""Causal sequence windows over a panel, and the LightningDataModule that serves them.

A window ending at row t holds rows t-T+1..t only, and its target at each step s is the label of row s, so the
label of the last step is the label at t. Windows never reach past the end of the panel they are cut from;
train and validation panels are cut from time-ordered, embargoed ranges, so no window crosses a boundary.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import DataLoader, Dataset

from gpt_trader.core.errors import DataError
from gpt_trader.ml.transformer.panel import IGNORE_INDEX, Normalizer, Panel

Batch = dict[str, torch.Tensor]


def window_ends(n_rows: int, seq_len: int, *, stride: int = 1, first: int | None = None) -> npt.NDArray[np.int64]:
    """End rows of windows of `seq_len` over `n_rows` rows, every `stride` rows, always including the last row."""
    start = max(seq_len - 1, first if first is not None else 0)
    if n_rows < seq_len or start >= n_rows:
        raise DataError(
            f"{n_rows} rows are too few for windows of {seq_len} steps"
            + (f" ending at or after row {first}" if first else "")
        )
    ends = np.arange(start, n_rows, stride, dtype=np.int64)
    if ends[-1] != n_rows - 1:
        ends = np.append(ends, n_rows - 1)
    return ends


class WindowDataset(Dataset[Batch]):
    """Windows of a normalized panel: x (T, A, F), calendar (T, 5), labels (T, A), target (T, A), target_mask.

    Labels of rows before `label_start` (context only, e.g. training rows in front of a validation range) are
    ignored; with `all_steps=False` only the last step of each window carries a label.
    """

    def __init__(
        self,
        panel: Panel,
        normalizer: Normalizer,
        seq_len: int,
        ends: npt.NDArray[np.int64],
        *,
        label_start: int = 0,
        all_steps: bool = False,
    ) -> None:
        self.seq_len = seq_len
        self.ends = ends
        self.x = torch.from_numpy(normalizer.transform(panel.features))
        self.calendar = torch.from_numpy(panel.calendar)
        labels = panel.labels.copy()
        labels[:label_start] = IGNORE_INDEX
        self.labels = torch.from_numpy(labels)
        fwd = (panel.fwd_return - normalizer.target_mean) / normalizer.target_std
        mask = np.isfinite(fwd)
        mask[:label_start] = False
        self.target = torch.from_numpy(np.where(mask, fwd, 0.0).astype(np.float32))
        self.target_mask = torch.from_numpy(mask)
        self.all_steps = all_steps

    def __len__(self) -> int:
        return int(self.ends.shape[0])

    def __getitem__(self, index: int) -> Batch:
        end = int(self.ends[index]) + 1
        window = slice(end - self.seq_len, end)
        labels, mask = self.labels[window], self.target_mask[window]
        if not self.all_steps:
            labels = labels.clone()
            labels[:-1] = IGNORE_INDEX
            mask = mask.clone()
            mask[:-1] = False
        return {
            "x": self.x[window],
            "calendar": self.calendar[window],
            "labels": labels,
            "target": self.target[window],
            "target_mask": mask,
        }


class MarketDataModule(L.LightningDataModule):
    """Training windows (strided, every step labelled) and validation windows (one per row, last step only).

    The validation panel may start with context rows (before `val_label_start`) that carry no labels.
    """

    def __init__(
        self,
        train: Panel,
        val: Panel | None,
        normalizer: Normalizer,
        *,
        seq_len: int,
        batch_size: int,
        stride: int = 1,
        all_steps: bool = True,
        val_label_start: int = 0,
    ) -> None:
        super().__init__()
        self.train_panel, self.val_panel, self.normalizer = train, val, normalizer
        self.seq_len, self.batch_size, self.stride = seq_len, batch_size, stride
        self.all_steps, self.val_label_start = all_steps, val_label_start
        self.train_set: WindowDataset | None = None
        self.val_set: WindowDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Cut the windows (cheap: tensors are views of one normalized array)."""
        ends = window_ends(len(self.train_panel), self.seq_len, stride=self.stride)
        self.train_set = WindowDataset(self.train_panel, self.normalizer, self.seq_len, ends, all_steps=self.all_steps)
        if self.val_panel is not None:
            val_ends = window_ends(len(self.val_panel), self.seq_len, first=self.val_label_start)
            self.val_set = WindowDataset(
                self.val_panel, self.normalizer, self.seq_len, val_ends, label_start=self.val_label_start
            )

    def train_dataloader(self) -> DataLoader[Batch]:
        """Shuffled windows of the training range only."""
        assert self.train_set is not None, "call setup() first"
        # Shuffling permutes whole windows inside the training range; no window crosses into validation.
        generator = torch.Generator().manual_seed(int(torch.initial_seed()) % 2**31)
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, generator=generator)

    def val_dataloader(self) -> Any:
        """Validation windows in time order (an empty list when there is no validation data)."""
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=self.batch_size * 4, shuffle=False)
