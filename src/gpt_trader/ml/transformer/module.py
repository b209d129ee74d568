"""The LightningModule: joint Buy/Hold/Sell cross-entropy and forward-return regression."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from gpt_trader.ml.transformer.model import N_CLASSES, MarketTransformer
from gpt_trader.ml.transformer.panel import IGNORE_INDEX

Batch = dict[str, torch.Tensor]


class MarketTransformerModule(L.LightningModule):
    """Wraps `MarketTransformer`; `model_kwargs` are its constructor arguments (saved as hyper-parameters)."""

    def __init__(
        self,
        model_kwargs: dict[str, Any],
        *,
        learning_rate: float = 3e-4,
        weight_decay: float = 0.01,
        regression_weight: float = 0.5,
        max_epochs: int = 20,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = MarketTransformer(**model_kwargs)

    def forward(self, x: torch.Tensor, calendar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, T, A, 3), standardized return forecast (B, T, A))."""
        return self.model(x, calendar)

    def _step(self, batch: Batch, stage: str) -> torch.Tensor:
        logits, expected = self(batch["x"], batch["calendar"])
        labels = batch["labels"]
        ce = F.cross_entropy(logits.reshape(-1, N_CLASSES).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX)
        mask = batch["target_mask"]
        mse = (
            F.mse_loss(expected.float()[mask], batch["target"][mask])
            if mask.any()
            else torch.zeros((), device=logits.device)
        )
        loss = ce + self.hparams["regression_weight"] * mse
        labelled = labels != IGNORE_INDEX
        accuracy = (logits.argmax(-1)[labelled] == labels[labelled]).float().mean()
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=labels.shape[0])
        self.log(f"{stage}_ce", ce, on_step=False, on_epoch=True, batch_size=labels.shape[0])
        self.log(f"{stage}_mse", mse, on_step=False, on_epoch=True, batch_size=labels.shape[0])
        self.log(f"{stage}_accuracy", accuracy, on_step=False, on_epoch=True, batch_size=labels.shape[0])
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """One optimizer step's loss."""
        return self._step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Validation loss/accuracy on the last step of each window (what inference uses)."""
        self._step(batch, "val")

    def configure_optimizers(self) -> Any:
        """AdamW with cosine decay over the epoch budget."""
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.hparams["learning_rate"], weight_decay=self.hparams["weight_decay"]
        )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.hparams["max_epochs"]))
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
