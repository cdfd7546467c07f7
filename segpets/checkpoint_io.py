"""Checkpoint writes that a kill cannot corrupt: Lightning's ``CheckpointIO`` plugin slot,
filled with "write a temp file next to the target, fsync, then ``os.replace``".

Lightning's own ``TorchCheckpointIO`` writes through an fsspec transaction whose temp file lives
in the system temp dir; when that is another filesystem the final move is a copy, and a kill
during the copy leaves a truncated ``last.ckpt``. ``os.replace`` within one folder is atomic on
POSIX and Windows: readers see the old file or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shlex
import tempfile
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from segpets.build import read_checkpoint, stored_config
from segpets.callbacks.best import recorded_best_files
from segpets.cli import override_arg
from segpets.config_checks import config_differences, flatten
from segpets.errors import ConfigError
from segpets.trust import trusted_config

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"  # partial writes are named .tmp-<name>-XXXX; never matched as *.ckpt
LAST = "last.ckpt"


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` that leaves either the old ``path`` or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)  # serialise first: a failure here touches no file at all
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # incl. KeyboardInterrupt: drop the partial temp file, keep the old
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a power loss after replace keeps the new name)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``Trainer(plugins=[AtomicCheckpointIO()])``: every checkpoint Lightning writes
    (``last.ckpt``, the best ones, preemption saves) goes through :func:`atomic_torch_save`."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        atomic_torch_save(checkpoint, path)


# --- which checkpoint to resume from (or test), and what a run may not overwrite ---------------
class ConfigMismatch(ConfigError):
    """A checkpoint of another model or another config than this run's."""


def resolve_ckpt_path(cfg: DictConfig) -> Path | None:
    """The checkpoint ``fit`` resumes from (or a test-only run tests): ``ckpt_path=<file>``, or
    with ``ckpt_path=last`` / ``resume=true`` the newest ``last.ckpt`` of earlier runs of this
    ``task_name`` (the same ``hydra.job.num`` in a sweep) whose stored config matches this
    run's. With none found yet, training starts fresh (a job script can always pass
    ``resume=true``); with some found but none matching, the run is refused naming the keys
    that differ in the newest. The file is checked (:func:`check_resumable`) before use."""
    value = cfg.get("ckpt_path")
    if not (cfg.get("resume") or value == "last"):
        return check_resumable(value, cfg) if value else None
    candidates = _last_ckpts(cfg)
    if not candidates:
        log.warning("resume: no earlier last.ckpt of task_name=%s; starting fresh", cfg.task_name)
        return None
    mismatches = []
    for path in candidates:
        try:
            found = check_resumable(path, cfg)
        except ConfigMismatch as err:
            mismatches.append(str(err))
            continue
        log.info("resume: continuing from '%s' (the newest matching last.ckpt)", found)
        return found
    raise ConfigError(
        f"resume=true: none of the {len(candidates)} earlier last.ckpt of task_name="
        f"{cfg.task_name} has this run's config; the newest: {mismatches[0]}; or use another "
        f"task_name for a new experiment"
    )


def _last_ckpts(cfg: DictConfig) -> list[Path]:
    """This task's earlier ``last.ckpt`` files (this run's own folder excluded), newest first."""
    task = Path(cfg.paths.log_dir).expanduser().resolve() / str(cfg.task_name)
    pattern, own = f"runs/*/checkpoints/{LAST}", None
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        own = Path(hydra_cfg.runtime.output_dir).resolve()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            pattern = f"multiruns/*/{hydra_cfg.job.num}/checkpoints/{LAST}"
    found = [p for p in task.glob(pattern) if own is None or own not in p.resolve().parents]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def check_resumable(path: str | Path, cfg: DictConfig) -> Path:
    """A readable segpets checkpoint (``weights_only``, its rebuilt sections trusted) of the
    same net and config as ``cfg`` (keys in ``RESUME_IGNORED`` aside; a test-only run compares
    only what testing uses), whose recorded best checkpoints exist; otherwise a one-line
    ``ConfigError`` saying what is wrong. Says plainly when there is nothing left to train."""
    path, ckpt = read_checkpoint(path)
    stored = stored_config(ckpt)
    source = f"ckpt_path: '{path}'"
    if not isinstance(stored, dict) or "model" not in stored:
        raise ConfigError(f"{source} is not a segpets training checkpoint")
    saved = trusted_config(stored, source, need=("model",))
    _check_same_model(saved, cfg, path)
    current = OmegaConf.to_container(cfg, resolve=True)
    testing_only = not cfg.get("train")
    if testing_only:
        stored, current = _tested_part(stored), _tested_part(current)
    diff = config_differences(stored, current, flatten(OmegaConf.to_container(cfg)))
    if diff:
        more = f" and {len(diff) - 5} more" if len(diff) > 5 else ""
        raise ConfigMismatch(
            f"{source} was trained with another config ({'; '.join(diff[:5])}{more}); pass the "
            f"overrides of the run that wrote it (only where or how long a run goes may differ)"
        )
    if not testing_only:
        for state in _monitoring_states(ckpt):
            recorded_best_files(state, path)
        _say_if_finished(ckpt, cfg, path)
    return path


def _check_same_model(saved: DictConfig, cfg: DictConfig, path: Path) -> None:
    ignore = ("channels_last", "compile", "encoder_weights")  # how the net runs / starts, not shape
    ours = OmegaConf.to_container(cfg.model, resolve=True)
    theirs = OmegaConf.to_container(saved.model, resolve=True)
    keys = sorted((set(ours) | set(theirs)) - set(ignore))
    diff = [
        f"model.{k}: {theirs.get(k)!r} there, {ours.get(k)!r} here"
        for k in keys
        if ours.get(k) != theirs.get(k)
    ]
    if diff:
        raise ConfigMismatch(
            f"ckpt_path: '{path}' is a checkpoint of another model ({'; '.join(diff)}); "
            f"pass the model=... overrides of the run that wrote it"
        )


def _tested_part(config: dict) -> dict:
    """What testing a checkpoint depends on: net, loss, data and numeric precision."""
    trainer = config.get("trainer") or {}
    part = {key: config.get(key) for key in ("model", "loss", "data")}
    return {**part, "trainer": {"precision": trainer.get("precision")}}


def _monitoring_states(ckpt: dict) -> list[dict]:
    """The stored states of ``ModelCheckpoint`` callbacks that track a best (a monitor)."""
    states = ckpt.get("callbacks") or {}
    return [
        s
        for key, s in states.items()
        if str(key).startswith("ModelCheckpoint") and isinstance(s, dict) and s.get("monitor")
    ]


def _say_if_finished(ckpt: dict, cfg: DictConfig, path: Path) -> None:
    """Lightning stops at once when the checkpoint already did ``trainer.max_epochs`` epochs
    (its own message is easy to miss); say so plainly."""
    try:
        done = int(ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError, ValueError):
        return
    max_epochs = OmegaConf.select(cfg, "trainer.max_epochs", default=None)
    if isinstance(max_epochs, int) and 0 <= max_epochs <= done:
        then = "testing its best checkpoint" if cfg.get("test") else "nothing to do"
        log.warning(
            "resume: '%s' already reached trainer.max_epochs=%d (%d epochs done), so nothing is "
            "left to train: %s; raise trainer.max_epochs to train longer",
            path, max_epochs, done, then,
        )  # fmt: skip


def refuse_overwrite(checkpoint_dir: str | Path | None, resume_from: Path | None) -> None:
    """A run never writes into a checkpoint folder that already holds checkpoints, unless it
    resumes from one of them (continuing that run is what updates its ``last.ckpt``)."""
    if not checkpoint_dir:
        return
    folder = Path(checkpoint_dir).expanduser().resolve()
    existing = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
    if existing and (resume_from is None or resume_from.parent != folder):
        shown = ", ".join(existing[:4]) + (" ..." if len(existing) > 4 else "")
        resume = shlex.quote(override_arg("ckpt_path", folder / LAST))
        raise ConfigError(
            f"'{folder}' already holds checkpoints ({shown}); refusing to overwrite them: resume "
            f"with {resume}, or drop hydra.run.dir to get a fresh run folder"
        )
