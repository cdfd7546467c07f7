"""Resume and preemption, as a user meets them: real processes, killed for real.

* 2 epochs straight == 1 epoch, SIGKILL, ``resume=true`` for the 2nd (val Dice to 1e-6, and
  the weights, optimizer and scheduler state bit for bit);
* SIGTERM / SIGINT during training: ``last.ckpt`` saved, the resume command printed, exit
  143 / 130, and the printed command finishes the run;
* a kill while a checkpoint is written never leaves a corrupt file; resume checks the file.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from segpets.checkpoints.io import AtomicCheckpointIO, atomic_torch_save
from segpets.checkpoints.resume import check_resumable
from segpets.errors import ConfigError
from tests.conftest import REPO, compose_train

QUIET = ["callbacks.progress_bar.refresh_rate=0", "callbacks.val_images=null"]


def tiny(mini_root: Path) -> list[str]:
    return [
        f"data.root={mini_root}",
        "trainer=cpu",
        "model.width=8",
        "data.image_size=64",
        "data.batch_size=8",
        "data.num_workers=0",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        "trainer.deterministic=true",
        "trainer.max_epochs=2",
        "optimizer.lr=3e-3",
        "model.batch_norm=true",
        "seed=7",
        "test=false",
        "logger=csv",
        *QUIET,
    ]


class SigkillAfterFirstEpoch(L.Callback):
    """Test-only: dies like an OOM-killed job, as epoch 1 starts (epoch 0's last.ckpt written,
    its plateau-scheduler step taken)."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)


class SlowBatches(L.Callback):
    """Test-only: makes epoch 1 long enough to be interrupted reliably."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch >= 1:
            time.sleep(0.5)


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    """A CLI run; its output goes to files (an unread pipe would fill up and stall it)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    logs = cwd / f"stderr-{len(list(cwd.glob('stderr-*')))}.txt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "segpets.train", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=logs.open("w"),
        text=True,
    )
    proc.logs = logs
    return proc


def finish(proc: subprocess.Popen, timeout: int = 240) -> tuple[int, str]:
    proc.wait(timeout=timeout)
    return proc.returncode, proc.logs.read_text()


def run_dirs(cwd: Path) -> list[Path]:
    return sorted((cwd / "outputs" / "train" / "runs").iterdir())


def final_val(run_dir: Path) -> tuple[float, float]:
    """(val/dice, val/loss) of the last validation, from the CSV log."""
    rows = [r for r in csv.DictReader((run_dir / "csv" / "metrics.csv").open()) if r["val/dice"]]
    return float(rows[-1]["val/dice"]), float(rows[-1]["val/loss"])


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_tensors(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(mini_root: Path, tmp_path: Path) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    kill = f"+callbacks.kill._target_={__name__}.SigkillAfterFirstEpoch"
    procs = [start(tiny(mini_root), straight), start([*tiny(mini_root), kill], killed)]
    (code_a, err_a), (code_b, err_b) = finish(procs[0]), finish(procs[1])
    assert code_a == 0, err_a[-3000:]
    assert code_b == -signal.SIGKILL, err_b[-3000:]
    (first,) = run_dirs(killed)
    assert load(first / "checkpoints" / "last.ckpt")["epoch"] == 0

    code, err = finish(start([*tiny(mini_root), "resume=true"], killed))
    assert code == 0, err[-3000:]
    resumed = run_dirs(killed)[-1]
    assert resumed != first and (first / "checkpoints" / "last.ckpt").is_file()  # old run kept
    (uninterrupted,) = run_dirs(straight)
    dice, loss = final_val(resumed)
    assert dice > 0.05  # a model that learned something: the comparison is not 0 == 0
    assert (dice, loss) == pytest.approx(final_val(uninterrupted), abs=1e-6)
    a, b = load(uninterrupted / "checkpoints/last.ckpt"), load(resumed / "checkpoints/last.ckpt")
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"]) == (1, 6)
    for key in ("state_dict", "optimizer_states", "lr_schedulers"):
        assert_same_tensors(a[key], b[key], key)


def resume_line(stderr: str) -> str:
    lines = stderr.splitlines()
    return lines[[i for i, line in enumerate(lines) if "Resume with:" in line][-1] + 1].strip()


@pytest.mark.slow
def test_sigterm_and_sigint_save_and_print_how_to_resume(mini_root: Path, tmp_path: Path) -> None:
    slow = f"+callbacks.slow._target_={__name__}.SlowBatches"
    args = [*tiny(mini_root), "trainer.limit_train_batches=8", slow]
    runs = {sig: tmp_path / sig.name for sig in (signal.SIGTERM, signal.SIGINT)}
    procs = {}
    for sig, cwd in runs.items():
        cwd.mkdir()
        procs[sig] = start(args, cwd)
    for sig, proc in procs.items():  # signal each run in epoch 1, after epoch 0's last.ckpt
        deadline = time.monotonic() + 180
        while not list(runs[sig].glob("outputs/train/runs/*/checkpoints/last.ckpt")):
            assert proc.poll() is None and time.monotonic() < deadline, finish(proc)[1][-3000:]
            time.sleep(0.05)
        proc.send_signal(sig)
    printed = {}
    for sig, proc in procs.items():
        code, err = finish(proc)
        printed[sig] = err
        assert code == 128 + sig, err[-3000:]
        said = "interrupted (Ctrl-C)" if sig == signal.SIGINT else f"{sig.name} received"
        assert f"segpets: {said}: finishing the current batch" in err and "Traceback" not in err
        assert "Received SIGTERM" not in err  # Lightning's line for the signal segpets hands it
        (run_dir,) = run_dirs(runs[sig])
        saved = load(run_dir / "checkpoints" / "last.ckpt")
        assert 8 <= saved["global_step"] < 16  # in epoch 1 (of 8 steps each)
        assert resume_line(err).endswith(f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}")

    command = shlex.split(resume_line(printed[signal.SIGTERM]))
    assert command[:3] == ["python", "-m", "segpets.train"]
    code, err = finish(start(command[3:], runs[signal.SIGTERM]))
    assert code == 0, err[-3000:]
    done = load(run_dirs(runs[signal.SIGTERM])[-1] / "checkpoints" / "last.ckpt")
    assert done["epoch"] == 1 and done["global_step"] == 16


def test_checkpoint_write_killed_midway_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1, "w": torch.ones(3)}, target)
    real_fsync = os.fsync

    def die_mid_write(fd: int) -> None:  # the new bytes are in the temp file, not yet renamed
        real_fsync(fd)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", die_mid_write)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"step": 2, "w": torch.zeros(10**6)}, target)
    monkeypatch.undo()
    assert load(target)["step"] == 1  # the complete old checkpoint, still loadable
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no partial leftovers


def test_a_truncated_last_ckpt_is_refused_clearly(tmp_path: Path) -> None:
    """What an in-place writer leaves when the kill lands (why the plugin exists)."""
    target = tmp_path / "last.ckpt"
    torch.save({"step": 1}, target)
    with target.open("wb") as f:  # what an in-place writer has done when the kill lands
        f.write(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(ConfigError, match=re.escape(f"cannot load checkpoint '{target}'")):
        check_resumable(target, compose_train([], tmp_path))
