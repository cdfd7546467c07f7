"""How much of the test set a test pass scored, so a Dice on a subset says so."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


class TestedImages(L.Callback):
    """Counts the images each test pass scored, summed over all processes (``tested``), and
    the size of the test set (``total``, the test loader's dataset), so a run tested with
    ``trainer.limit_test_batches`` reports "on 32 of 198 images" instead of passing a subset's
    Dice off as the test Dice."""

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self) -> None:
        self.tested = 0
        self.total = 0
        self._count = 0

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._count = 0

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """``outputs``: the (N, 1, H, W) logits of the batch (images a ``bad_samples=skip``
        collate dropped are not in it)."""
        self._count += len(outputs) if isinstance(outputs, torch.Tensor) else len(batch["image"])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        count = torch.tensor(float(self._count), device=pl_module.device)
        self.tested = int(trainer.strategy.reduce(count, reduce_op="sum").item())
        loaders = trainer.test_dataloaders
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        self.total = sum(len(loader.dataset) for loader in loaders if loader is not None)
