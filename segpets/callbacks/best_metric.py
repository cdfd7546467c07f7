"""The best value of ``optimized_metric`` over a run, in that metric's own direction: what
``segpets.train`` returns to Hydra sweepers. Kept in every checkpoint, so a resumed run
returns the same best as the uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torchmetrics import MaxMetric, MinMetric

from segpets.errors import ConfigError


def metric_mode(name: str) -> str:
    """``min`` for loss-like metrics (``val/loss``), ``max`` for scores (Dice, IoU, accuracy)."""
    return "min" if "loss" in name.rsplit("/", 1)[-1] else "max"


class BestMetric(L.Callback):
    """The best per-epoch value of ``monitor`` (``min`` or ``max``, see :func:`metric_mode`),
    read when an epoch's validation ends (as ``ModelCheckpoint`` reads its monitor), or at the
    end of a training epoch without validation. Its state rides in every checkpoint, so a
    resumed run returns the same best as the uninterrupted one. The running best is a
    torchmetrics ``MaxMetric``/``MinMetric`` (float64, NaN dropped, never synced across ranks:
    each rank reads the same, already reduced, logged value)."""

    def __init__(self, monitor: str, mode: str | None = None) -> None:
        self.monitor, self.mode = monitor, mode or metric_mode(monitor)
        self.best_epoch: int | None = None  # None until a value that is not NaN is read
        self._best = self._tracker()
        self._read_epoch = -1
        self._validated = False

    def _tracker(self) -> MaxMetric | MinMetric:
        kind = MinMetric if self.mode == "min" else MaxMetric
        return kind(nan_strategy="ignore", sync_on_compute=False).set_dtype(torch.float64)

    @property
    def best(self) -> float | None:
        """The best value read so far; ``None`` before any (NaN never counts)."""
        return None if self.best_epoch is None else float(self._best.compute())

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._validated = True
        if self._read(trainer):  # a train-epoch metric comes later, at the epoch's end
            self._read_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # without validation (limit_val_batches=0) a val metric never comes, and Lightning's
        # ModelCheckpoint skips it then too; once validation has run, a missing one is a typo
        unread = self._read_epoch != trainer.current_epoch
        if unread and not self._read(trainer) and self._validated:
            names = ", ".join(sorted(trainer.callback_metrics))
            raise ConfigError(
                f"optimized_metric: '{self.monitor}' is never logged; logged: {names}"
            )

    def _read(self, trainer: L.Trainer) -> bool:
        """Take this epoch's value if it is logged (NaN never counts as best); whether it was."""
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return False
        value, before = float(value), self.best
        self._best.update(value)  # a NaN is dropped
        if not math.isnan(value) and (before is None or self.best != before):
            self.best_epoch = trainer.current_epoch  # strictly better, or the first
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        best, self.best_epoch = state_dict.get("best"), state_dict.get("best_epoch")
        self._best.reset()
        if best is None:
            self.best_epoch = None
        else:
            self._best.update(float(best))
