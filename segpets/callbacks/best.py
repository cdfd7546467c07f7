""" "Best" that survives a resume into a new run folder, for the checkpoint and the sweeper.

segpets resumes into a new run folder, and Lightning's ``ModelCheckpoint`` drops its best score
when its folder changed ("dirpath has changed"), so the first epoch after a resume became the
best whatever its score. :func:`carry_best_checkpoints` copies the recorded best checkpoint
files into the new folder (the old folder is only read) and rewrites the stored state to point
there, so ``ModelCheckpoint`` restores its best score and files as if it had never moved.
:class:`BestMetric` tracks the best value of ``optimized_metric`` (what ``segpets.train``
returns to sweepers) in that metric's own direction, and keeps it in every checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from segpets.errors import ConfigError

log = logging.getLogger(__name__)

PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


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


def recorded_best_files(state: dict[str, Any], resumed_from: Path) -> dict[str, Path]:
    """Recorded path → existing file, for every checkpoint file a ``ModelCheckpoint`` state
    names: the recorded (absolute) path, or else the same name beside ``resumed_from`` (a run
    folder copied or moved elsewhere). Raises ``ConfigError`` naming a file found nowhere."""
    recorded = {str(p) for p in state.get("best_k_models") or {}}
    recorded |= {str(state[k]) for k in PATH_KEYS if state.get(k)}
    found = {}
    for path in sorted(recorded):
        for candidate in (Path(path), resumed_from.parent / Path(path).name):
            if candidate.is_file():
                found[path] = candidate
                break
        else:
            raise ConfigError(
                f"ckpt_path: '{resumed_from}' records the checkpoint '{path}', which is gone "
                f"(not beside it either); put it back, or resume from a complete copy of its "
                f"run folder"
            )
    return found


def carry_best_checkpoints(
    trainer: L.Trainer, checkpoint: dict[str, Any], resumed_from: Path
) -> None:
    """Before Lightning restores callbacks from ``checkpoint``: for each ``ModelCheckpoint`` of
    ``trainer`` whose stored folder differs from its own, copy the checkpoint files a
    monitoring one records into its folder and rewrite the stored state (paths, folder) to
    them, so Lightning restores the best score and files (a ``last.ckpt`` writer carries
    nothing over: it starts afresh in the new folder). Never writes the old folder."""
    states = checkpoint.get("callbacks") or {}
    for callback in trainer.checkpoint_callbacks:
        state = states.get(callback.state_key)
        if not isinstance(callback, ModelCheckpoint) or not callback.dirpath or not state:
            continue
        if state.get("dirpath") == callback.dirpath:
            continue
        moved: dict[str, str] = {}
        if callback.monitor:
            found = recorded_best_files(state, resumed_from)
            moved = {old: _copy_into(path, Path(callback.dirpath)) for old, path in found.items()}
            log.info(
                "resume: best checkpoint(s) copied into this run: %s", ", ".join(moved.values())
            )
        best_k = state.get("best_k_models") or {}
        state["best_k_models"] = {
            moved[str(p)]: score for p, score in best_k.items() if str(p) in moved
        }
        for key in PATH_KEYS:
            state[key] = moved.get(str(state.get(key)), "")
        state["dirpath"] = callback.dirpath


def _copy_into(source: Path, folder: Path) -> str:
    """Copy ``source`` into ``folder`` (temp file + rename: never half-written); its path."""
    target = folder / source.name
    if target.resolve() == source.resolve():
        return str(target)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{source.name}-", dir=folder)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return str(target)
