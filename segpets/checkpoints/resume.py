"""A checkpoint's second life: which one a run resumes from (or tests), that it is this run's
model and config, what a run may not overwrite, and the best checkpoints a resume carries over.

segpets resumes into a new run folder, and Lightning's ``ModelCheckpoint`` drops its best score
when its folder changed ("dirpath has changed"), so the first epoch after a resume became the
best whatever its score. :func:`carry_best_checkpoints` copies the recorded best checkpoint
files into the new folder (the old folder is only read) and rewrites the stored state to point
there, so ``ModelCheckpoint`` restores its best score and files as if it had never moved.

Those recorded paths are data: only a segpets checkpoint of the same net found *by name* in the
resumed checkpoint's own folder is used (:func:`segpets.checkpoints.paths.checkpoint_beside`);
every other entry is dropped with one warning, before Lightning could test, copy or delete
the file it names (:class:`CheckpointPaths`, a callback every training run has).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig, OmegaConf

from segpets.checkpoints.load import read_checkpoint, stored_config
from segpets.checkpoints.paths import checkpoint_beside
from segpets.checkpoints.states import check_training_state
from segpets.checkpoints.trust import (
    REBUILT_SECTIONS,
    config_targets,
    trusted_config,
    vouched_targets,
)
from segpets.command.checks import config_differences, flatten
from segpets.command.outputs import atomic_write
from segpets.command.overrides import override_arg
from segpets.command.paths import stored_paths_absolute
from segpets.errors import ConfigError

log = logging.getLogger(__name__)

LAST = "last.ckpt"
PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


class ConfigMismatch(ConfigError):
    """A checkpoint of another model or another config than this run's."""


def resolve_ckpt_path(cfg: DictConfig, current: dict[str, Any] | None = None) -> Path | None:
    """The checkpoint ``fit`` resumes from (or a test-only run tests): ``ckpt_path=<file>``, or
    with ``ckpt_path=last`` / ``resume=true`` the newest ``last.ckpt`` of earlier runs of this
    ``task_name`` (the same ``hydra.job.num`` in a sweep) whose stored config matches this
    run's. With none found yet, training starts fresh (a job script can always pass
    ``resume=true``); with some found but none matching, the run is refused naming the keys
    that differ in the newest. The file is checked (:func:`check_resumable`) before use;
    ``current``: this run's resolved config as its module records it (normalisation filled in),
    by default ``cfg`` resolved."""
    value = cfg.get("ckpt_path")
    if not (cfg.get("resume") or value == "last"):
        return check_resumable(value, cfg, current) if value else None
    candidates = _last_ckpts(cfg)
    if not candidates:
        log.warning("resume: no earlier last.ckpt of task_name=%s; starting fresh", cfg.task_name)
        return None
    mismatches = []
    for path in candidates:
        try:
            found = check_resumable(path, cfg, current)
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
    """This task's earlier ``last.ckpt`` files (this run's own folder excluded), newest first;
    a run folder, ``checkpoints/`` or ``last.ckpt`` that is a symbolic link is not one (a
    folder planted among the runs cannot point the lookup elsewhere)."""
    task = Path(cfg.paths.log_dir).expanduser().resolve() / str(cfg.task_name)
    pattern, own = f"runs/*/checkpoints/{LAST}", None
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        own = Path(hydra_cfg.runtime.output_dir).resolve()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            pattern = f"multiruns/*/{hydra_cfg.job.num}/checkpoints/{LAST}"
    found = [
        p
        for p in task.glob(pattern)
        if os.path.realpath(p) == str(p) and p.is_file() and (own is None or own not in p.parents)
    ]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def check_resumable(path: str | Path, cfg: DictConfig, current: dict | None = None) -> Path:
    """A readable segpets checkpoint (``weights_only``, its rebuilt sections trusted) of the
    same net and config as ``cfg`` (keys in ``RESUME_IGNORED`` aside; a test-only run compares
    only what testing uses); otherwise a one-line ``ConfigError`` saying what is wrong. Says
    plainly when there is nothing left to train."""
    path, ckpt = read_checkpoint(path)
    stored = stored_config(ckpt)
    source = f"ckpt_path: '{path}'"
    if not isinstance(stored, dict) or "model" not in stored:
        raise ConfigError(f"{source} is not a segpets training checkpoint")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    # what this run builds from its own config (model, loss, data) it trusts in the file too:
    # a resume never instantiates the stored config, and the model must be the same anyway
    own = config_targets({k: resolved.get(k) for k in REBUILT_SECTIONS})
    saved = trusted_config(stored, source, need=("model",), vouched=vouched_targets(cfg) | own)
    _check_same_model(saved, cfg, path)
    current = current or _with_stored_stats(resolved, stored)
    stored = stored_paths_absolute(stored)  # relative paths of older checkpoints: from here
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
        check_training_state(ckpt, source)
        _say_if_finished(ckpt, cfg, path)
    return path


def _with_stored_stats(current: dict, stored: dict) -> dict:
    """``current`` with the stored normalisation where its own is left to the net (null)."""
    data, theirs = dict(current.get("data") or {}), stored.get("data") or {}
    for key in ("mean", "std"):
        if data.get(key) is None and key in theirs:
            data[key] = theirs[key]
    return {**current, "data": data}


def _check_same_model(saved: DictConfig, cfg: DictConfig, path: Path) -> None:
    ignore = ("encoder_weights",)  # how the net starts, not what it is
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


def recorded_best_files(
    state: dict[str, Any], resumed_from: Path, model: Any
) -> tuple[dict[str, Path], dict[str, str]]:
    """(recorded path → file it names, recorded path → why it is not used) for every checkpoint
    file a ``ModelCheckpoint`` state records: only a segpets checkpoint of the net ``model``
    found by name in ``resumed_from``'s own folder is used
    (:func:`segpets.checkpoints.paths.checkpoint_beside`); nothing elsewhere is read."""
    recorded = {str(p) for p in state.get("best_k_models") or {}}
    recorded |= {str(state[k]) for k in PATH_KEYS if state.get(k)}
    folder = Path(os.path.realpath(resumed_from)).parent
    found: dict[str, Path] = {}
    dropped: dict[str, str] = {}
    for path in sorted(recorded):
        result = checkpoint_beside(path, folder, model)
        if isinstance(result, Path):
            found[path] = result
        else:
            dropped[path] = result
    return found, dropped


class CheckpointPaths(L.Callback):
    """Resuming (``fit`` with ``ckpt_path``): before Lightning restores any callback, the
    checkpoint files the stored ``ModelCheckpoint`` states name are checked and carried over
    (:func:`carry_best_checkpoints`). ``segpets.train`` adds it to every run, whatever
    ``callbacks`` says, since Lightning would otherwise test, copy or delete the files a
    checkpoint names."""

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING and trainer.ckpt_path:
            carry_best_checkpoints(trainer, checkpoint, Path(trainer.ckpt_path))
            return
        states = checkpoint.get("callbacks") or {}
        for callback in trainer.checkpoint_callbacks:  # testing: nothing of theirs is needed
            states.pop(callback.state_key, None)


def carry_best_checkpoints(
    trainer: L.Trainer, checkpoint: dict[str, Any], resumed_from: Path
) -> None:
    """Before Lightning restores callbacks from ``checkpoint``: for each ``ModelCheckpoint`` of
    ``trainer``, keep the recorded checkpoint files a monitoring one may use
    (:func:`recorded_best_files`), copy those not yet in its folder there, and rewrite the
    stored state (paths, folder, and the best and k-th scores of what is kept) to them, so
    Lightning restores the best score and files as if the run had never moved. A ``last.ckpt``
    writer carries nothing over. Entries dropped are named in one warning. Never writes the
    old folder."""
    states = checkpoint.get("callbacks") or {}
    model = _stored_model(checkpoint)
    dropped: dict[str, str] = {}
    for callback in trainer.checkpoint_callbacks:
        state = states.get(callback.state_key)
        if not isinstance(callback, ModelCheckpoint) or not isinstance(state, dict):
            continue
        moved: dict[str, str] = {}
        lost: dict[str, str] = {}
        if callback.monitor:  # a last.ckpt writer carries nothing over
            found, lost = recorded_best_files(state, resumed_from, model)
            folder = Path(callback.dirpath) if callback.dirpath else None
            moved = {old: _copy_into(path, folder) for old, path in found.items()}
            if moved:
                log.info("resume: best checkpoint(s) in this run: %s", ", ".join(moved.values()))
        _rewrite_state(state, moved, callback, rebuild=bool(lost))
        dropped.update(lost)
    if dropped:
        shown = "; ".join(f"'{p}' ({why})" for p, why in sorted(dropped.items()))
        log.warning(
            "resume: '%s' records checkpoint files this run does not use (only segpets "
            "checkpoints of this net in its own folder are): %s; the best checkpoint is the "
            "best of those kept and this run's epochs", resumed_from, shown,
        )  # fmt: skip


def _stored_model(checkpoint: dict[str, Any]) -> Any:
    hparams = checkpoint.get("hyper_parameters")
    config = hparams.get("config") if isinstance(hparams, dict) else None
    return config.get("model") if isinstance(config, dict) else None


def _rewrite_state(
    state: dict[str, Any], moved: dict[str, str], callback: ModelCheckpoint, rebuild: bool
) -> None:
    """``state`` naming only the ``moved`` files (old → new path) in ``callback``'s folder;
    ``rebuild`` (a recorded entry was dropped): the best and k-th entries and scores are those
    of the kept ones (none kept: no best yet, as in a fresh run)."""
    best_k = state.get("best_k_models") or {}
    kept = {moved[str(p)]: score for p, score in best_k.items() if str(p) in moved}
    state["best_k_models"] = kept
    for key in PATH_KEYS:
        state[key] = moved.get(str(state.get(key)), "")
    state["dirpath"] = callback.dirpath
    if not rebuild:
        return
    better = max if callback.mode == "max" else min
    worse = min if callback.mode == "max" else max
    if kept:
        best = better(kept, key=lambda p: _score(kept[p]))
        kth = worse(kept, key=lambda p: _score(kept[p]))
        state["best_model_path"], state["best_model_score"] = best, kept[best]
        state["kth_best_model_path"], state["kth_value"] = kth, kept[kth]
    else:
        state["best_model_path"], state["best_model_score"] = "", None
        state["kth_best_model_path"] = ""
        state["kth_value"] = torch.tensor(-torch.inf if callback.mode == "max" else torch.inf)


def _score(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        return float("nan")


def _copy_into(source: Path, folder: Path | None) -> str:
    """Copy ``source`` into ``folder`` (never half-written: :func:`atomic_write`); its path
    (``source`` itself without a folder)."""
    if folder is None:
        return str(source)
    target = folder / source.name
    if os.path.realpath(target) == os.path.realpath(source):
        return str(target)
    atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
    return str(target)
