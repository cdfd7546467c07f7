"""The best value of ``optimized_metric`` over a run, in that metric's own direction: what
``segpets.train`` returns to Hydra sweepers. Kept in every checkpoint, so a resumed run
returns the same best as the uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L

from segpets.errors import ConfigError


def metric_mode(name: str) -> str:
    """``min`` for loss-like metrics (``val/loss``), ``max`` for scores (Dice, IoU, accuracy)."""
    return "min" if "loss" in name.rsplit("/", 1)[-1] else "max"


class BestMetric(L.Callback):
    """The best per-epoch value of ``monitor`` (``min`` or ``max``, see :func:`metric_mode`),
    read when an epoch's validation ends (as ``ModelCheckpoint`` reads its monitor), or at the
    end of a training epoch without validation. Its state rides in every checkpoint, so a
    resumed run returns the same best as the uninterrupted one."""

    def __init__(self, monitor: str, mode: str | None = None) -> None:
        self.monitor, self.mode = monitor, mode or metric_mode(monitor)
        self.best: float | None = None
        self.best_epoch: int | None = None
        self._read_epoch = -1
        self._validated = False

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
        value = float(value)
        better = self.best is None or (
            value < self.best if self.mode == "min" else value > self.best
        )
        if better and not math.isnan(value):
            self.best, self.best_epoch = value, trainer.current_epoch
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.best_epoch = state_dict.get("best"), state_dict.get("best_epoch")
