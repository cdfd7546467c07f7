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
import tempfile
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from segpets.build import load_checkpoint
from segpets.errors import ConfigError

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


# --- which checkpoint to resume from, and what a run may not overwrite --------------------------
def resolve_ckpt_path(cfg: DictConfig) -> Path | None:
    """The checkpoint ``fit`` resumes from: ``ckpt_path=<file>``, or with ``ckpt_path=last`` /
    ``resume=true`` the newest ``last.ckpt`` of earlier runs of this ``task_name`` (the same
    ``hydra.job.num`` in a sweep). With none found yet, training starts fresh (a job script can
    always pass ``resume=true``). The file is checked before Lightning sees it."""
    value = cfg.get("ckpt_path")
    if not (cfg.get("resume") or value == "last"):
        return check_resumable(value, cfg) if value else None
    found = _newest_last_ckpt(cfg)
    if found is None:
        log.warning("resume: no earlier last.ckpt of task_name=%s; starting fresh", cfg.task_name)
        return None
    log.info("resume: continuing from '%s' (the newest last.ckpt)", found)
    return check_resumable(found, cfg)


def _newest_last_ckpt(cfg: DictConfig) -> Path | None:
    task = Path(cfg.paths.log_dir).expanduser().resolve() / str(cfg.task_name)
    pattern, own = f"runs/*/checkpoints/{LAST}", None
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        own = Path(hydra_cfg.runtime.output_dir).resolve()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            pattern = f"multiruns/*/{hydra_cfg.job.num}/checkpoints/{LAST}"
    found = [p for p in task.glob(pattern) if own is None or own not in p.resolve().parents]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def check_resumable(path: str | Path, cfg: DictConfig) -> Path:
    """A readable segpets checkpoint (``weights_only``) of the same net as ``cfg.model``, or a
    one-line ``ConfigError`` saying which keys differ."""
    path = Path(path).expanduser().resolve()
    saved, _ = load_checkpoint(path)
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
        raise ConfigError(
            f"ckpt_path: '{path}' is a checkpoint of another model ({'; '.join(diff)}); "
            f"pass the model=... overrides of the run that wrote it"
        )
    return path


def refuse_overwrite(checkpoint_dir: str | Path | None, resume_from: Path | None) -> None:
    """A run never writes into a checkpoint folder that already holds checkpoints, unless it
    resumes from one of them (continuing that run is what updates its ``last.ckpt``)."""
    if not checkpoint_dir:
        return
    folder = Path(checkpoint_dir).expanduser().resolve()
    existing = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
    if existing and (resume_from is None or resume_from.parent != folder):
        shown = ", ".join(existing[:4]) + (" ..." if len(existing) > 4 else "")
        raise ConfigError(
            f"'{folder}' already holds checkpoints ({shown}); refusing to overwrite them: resume "
            f"with ckpt_path={folder / LAST}, or drop hydra.run.dir to get a fresh run folder"
        )
