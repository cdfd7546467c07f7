"""Stop (or skip) on a non-finite training loss, before it reaches the weights."""

from __future__ import annotations

import logging
import math
from typing import Literal

import lightning as L
import torch

from segpets.errors import ConfigError, SegpetsError

log = logging.getLogger(__name__)

ACTIONS = ("stop", "skip")


class NonFiniteLossError(SegpetsError):
    """The training loss became NaN/inf; the message names the epoch, step, batch and images."""


class NonFiniteLossGuard(L.Callback):
    """Checks every training loss before ``backward``.

    ``action="stop"``: raise :class:`NonFiniteLossError` (one line, exit 2) before the bad
    gradients reach the optimizer, so no checkpoint ever holds NaN weights or a NaN score.
    ``action="skip"``: drop that optimizer step's gradients (set to ``None``, which every torch
    optimizer treats as "no update": weights and optimizer state stay untouched) and go on; the
    skipped batches are counted in a warning at the end of each epoch. The epoch's logged
    ``train/loss`` mean then includes the non-finite value, which is honest about what happened.
    """

    def __init__(self, action: Literal["stop", "skip"] = "stop") -> None:
        if action not in ACTIONS:
            raise ConfigError(
                f"callbacks.nonfinite_loss.action must be one of {', '.join(ACTIONS)}, "
                f"got '{action}'"
            )
        self.action = action
        self.skipped = 0
        self._batch: tuple[int, list[str]] = (-1, [])
        self._drop_grads = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        names = batch.get("name", []) if isinstance(batch, dict) else []
        self._batch = (batch_idx, list(names))

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        if torch.isfinite(loss).all():
            return
        batch_idx, names = self._batch
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        where = (
            f"epoch {trainer.current_epoch}, global step {trainer.global_step}, "
            f"batch {batch_idx} (images: {shown or 'unknown'})"
        )
        value = loss.detach().float().flatten()[0].item()
        if self.action == "stop":
            raise NonFiniteLossError(
                f"training loss is {'nan' if math.isnan(value) else value} at {where}; "
                f"stopped before the update, checkpoints hold only earlier weights. Try a lower "
                f"optimizer.lr, trainer.gradient_clip_val=1.0, or "
                f"callbacks.nonfinite_loss.action=skip"
            )
        self._drop_grads = True
        self.skipped += 1
        log.warning("skipping the update of %s: training loss is %s", where, value)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not self._drop_grads:
            return
        for group in optimizer.param_groups:
            for param in group["params"]:
                param.grad = None
        self._drop_grads = False

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.skipped:
            log.warning(
                "%d training batches with a non-finite loss were skipped so far (epoch %d)",
                self.skipped,
                trainer.current_epoch,
            )
