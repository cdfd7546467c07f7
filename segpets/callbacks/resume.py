"""Exact resume and preemption: what Lightning's fault tolerance leaves to the user.

Lightning's checkpoints restore weights, optimizer, scheduler, loop progress and callbacks.
They do not carry the global RNG states (which shuffle the data and, through
:class:`segpets.data.dataset.TorchSeeded`, pick every augmentation), and a resumed run
never replays the ``ReduceLROnPlateau`` step of the epoch whose checkpoint it starts from
(Lightning skips it because the metric is not in the checkpoint). :class:`ExactResume` adds
both. :class:`Preemption` turns SIGTERM/SIGINT into Lightning's graceful stop, saves
``last.ckpt`` and prints how to resume.
"""

from __future__ import annotations

import logging
import random
import shlex
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.optim.lr_scheduler import ReduceLROnPlateau

from segpets.command.console import without_sigterm_notice
from segpets.command.overrides import override_arg
from segpets.command.signals import request_stop
from segpets.errors import JobStopped

log = logging.getLogger(__name__)

LAST = "last.ckpt"


def collect_rng_states() -> dict[str, Any]:
    """torch/numpy/python RNG states as types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ExactResume(L.Callback):
    """Saves the RNG states and any pending plateau-scheduler metric with every checkpoint and
    restores them on resume, so an end-of-epoch resume continues bit-for-bit (tested in
    tests/test_resume.py). A mid-epoch checkpoint (preemption) resumes at its step, but the rest
    of that epoch sees a freshly shuffled order: torch's DataLoader keeps no position."""

    def __init__(self) -> None:
        self._trainer: L.Trainer | None = None
        self._val_epoch = -1  # epoch whose validation finished last (its metric is current)
        self._pending: list[dict[str, Any]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val_epoch = trainer.current_epoch

    def state_dict(self) -> dict[str, Any]:
        return {"rng": collect_rng_states(), "plateau": self._unstepped_plateaus()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_rng_states(state_dict["rng"])
        self._pending = state_dict.get("plateau", [])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Schedulers are restored by now: replay the plateau step the checkpoint missed."""
        for item in self._pending:
            scheduler = trainer.lr_scheduler_configs[item["index"]].scheduler
            if scheduler.last_epoch == item["last_epoch"]:
                scheduler.step(item["value"])
        self._pending = []

    def _unstepped_plateaus(self) -> list[dict[str, Any]]:
        """Plateau schedulers whose step for the current epoch is due: validation has run but
        Lightning steps them only after the epoch-end checkpoint is written."""
        trainer = self._trainer
        if trainer is None or self._val_epoch != trainer.current_epoch:
            return []
        pending = []
        for index, config in enumerate(trainer.lr_scheduler_configs):
            value = trainer.callback_metrics.get(config.monitor or "")
            scheduler = config.scheduler
            if (
                isinstance(scheduler, ReduceLROnPlateau)
                and config.interval == "epoch"
                and value is not None
                and scheduler.last_epoch == trainer.current_epoch
            ):
                pending.append(
                    {"index": index, "last_epoch": scheduler.last_epoch, "value": float(value)}
                )
        return pending


class Preemption(L.Callback):
    """SIGTERM (cluster preemption, ``kill``) or SIGINT (Ctrl+C) during ``fit``: finish the
    current batch (Lightning's graceful SIGTERM stop), save ``last.ckpt`` atomically and print the
    command that resumes. The same signal again stops at once without saving; another signal
    meanwhile (a launcher shutting its workers down after the user's Ctrl-C) does not. The
    entry point exits with ``128 + signal`` (143 / 130), see :func:`exit_code_on_preemption`;
    in a sweep the launching process does (``segpets.sweep``)."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self.saved: Path | None = None
        self._lightning_handler: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning registered its SIGTERM handler before this hook; ours wraps it.
        # Lightning's teardown restores every handler it found, ours included.
        if threading.current_thread() is not threading.main_thread():
            return
        self._lightning_handler = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal == signum:  # the same signal again: the user wants out now
            raise KeyboardInterrupt
        if self.signal is not None:
            print(
                f"segpets: {signal.Signals(signum).name} ignored: still saving after "
                f"{self.signal.name} (send {self.signal.name} again to stop at once)",
                file=sys.stderr,
                flush=True,
            )
            return
        self.signal = signal.Signals(signum)
        request_stop(signum)  # in a sweep: no new job starts
        again = "Ctrl-C again" if signum == signal.SIGINT else f"send {self.signal.name} again"
        print(
            f"segpets: {stop_reason(self.signal, 'received')}: finishing the current batch, then "
            f"saving a checkpoint ({again} to stop at once without saving)",
            file=sys.stderr,
            flush=True,
        )
        if callable(self._lightning_handler):
            with without_sigterm_notice():  # Lightning would say "Received SIGTERM" for it
                self._lightning_handler(signal.SIGTERM, frame)  # its flag: stop at batch end

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exc: Any) -> None:
        if not isinstance(exc, SIGTERMException) or trainer.fast_dev_run:
            return
        folder = getattr(trainer.checkpoint_callback, "dirpath", None)
        path = Path(folder or Path(trainer.default_root_dir) / "checkpoints") / LAST
        trainer.save_checkpoint(path, weights_only=False)  # the full state, for resuming
        self.saved = path
        if trainer.is_global_zero:
            reason = stop_reason(self.signal or signal.SIGTERM, "stopped")
            print(
                f"segpets: {reason} at epoch {trainer.current_epoch}, global step "
                f"{trainer.global_step}; checkpoint saved to '{path}'. Resume with:\n"
                f"  {resume_command(path)}",
                file=sys.stderr,
                flush=True,
            )


def stop_reason(signum: signal.Signals, when: str) -> str:
    """How a stop is announced (``when``: ``received`` or ``stopped``): ``interrupted
    (Ctrl-C)`` for SIGINT; ``SIGTERM received`` / ``stopped by SIGTERM`` for others."""
    if signum == signal.SIGINT:
        return "interrupted (Ctrl-C)"
    return f"{signum.name} received" if when == "received" else f"stopped by {signum.name}"


def resume_command(ckpt: Path) -> str:
    """The command line of this run with ``ckpt_path=<ckpt>`` (``resume=`` dropped), quoted
    for the shell and, where the path needs it, for Hydra: it works as printed."""
    overrides: list[str] = []
    if HydraConfig.initialized():
        overrides = [
            o
            for o in HydraConfig.get().overrides.task
            if not o.lstrip("+~").startswith(("ckpt_path=", "resume="))
        ]
    args = " ".join(shlex.quote(o) for o in [*overrides, override_arg("ckpt_path", ckpt)])
    return f"python -m segpets.train {args}"


@contextmanager
def exit_code_on_preemption(trainer: L.Trainer):
    """Lightning's graceful stop raises ``SIGTERMException``, a ``SystemExit`` with code 0;
    a preempted run must not look like a finished one: exit ``128 + signal`` instead. In a
    sweep, raise :class:`JobStopped` (an ``Exception``: the launcher collects every job's end
    instead of killing the others mid-save; ``segpets.sweep`` sets the exit code)."""
    try:
        yield
    except SIGTERMException:
        caught = [cb.signal for cb in trainer.callbacks if isinstance(cb, Preemption)]
        signum = next((s for s in caught if s is not None), signal.SIGTERM)
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            request_stop(signum)
            raise JobStopped(
                f"segpets: sweep job {HydraConfig.get().job.num} stopped by {signum.name}; its "
                f"checkpoint and resume command are above"
            ) from None
        raise SystemExit(128 + int(signum)) from None
