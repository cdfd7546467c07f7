"""Hydra multiruns as users start them: a grid on joblib (then summarised), submitit_local
(SLURM's local twin) and an Optuna search (on the basic launcher)."""

from __future__ import annotations

import csv
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import segpets.train
from segpets.command.overrides import override_arg
from segpets.summarize import main as summarize_cli
from segpets.summarize import read_curves
from tests.conftest import REPO, TINY_SYNTHETIC, assert_one_line_error, cli, run_segpets

# One intra-op thread per job: on a busy 2-core machine, torch's default threads fight over
# the cores and the same tiny job takes ~10x longer.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY = TINY_SYNTHETIC


def multirun(args: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    return run_segpets("train", ["-m", *TINY, *args], cwd, env=ENV, timeout=timeout)


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def swept(job: Path, keys: tuple[str, ...]) -> dict[str, str]:
    overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    return {k: v for k, v in (o.split("=", 1) for o in overrides) if k in keys}


@pytest.mark.slow
def test_grid_multirun_on_joblib_and_its_summary(tmp_path: Path, capsys) -> None:
    """The 2×2 lr × weight-decay grid, two jobs at a time on joblib's worker processes."""
    sweep = tmp_path / "grid"
    proc = multirun(
        [
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "optimizer.lr=1e-4,5e-3",
            "optimizer.weight_decay=0,1e-5",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    jobs = job_dirs(sweep)
    assert len(jobs) == 4
    keys = ("optimizer.lr", "optimizer.weight_decay")
    grid = {tuple(swept(j, keys).values()) for j in jobs}  # as Hydra wrote them
    assert {tuple(map(float, g)) for g in grid} == {(a, b) for a in (1e-4, 5e-3) for b in (0, 1e-5)}
    assert all((j / "test_metrics.json").is_file() for j in jobs)

    summarize_cli([str(sweep)])  # the `python -m segpets.summarize` entry point, in-process
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 4  # header + one row per run
    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    best = [float(r["best_val_dice"]) for r in rows]
    assert best == sorted(best, reverse=True) and all(0 <= b <= 1 for b in best)
    expected = {f"optimizer.lr={a} optimizer.weight_decay={b}" for a, b in grid}
    assert {r["overrides"] for r in rows} == expected
    assert all(int(r["epochs"]) == 2 and 0 <= float(r["test_dice"]) <= 1 for r in rows)
    for name in ("summary_loss.png", "summary_val_dice.png"):
        assert (sweep / name).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_submitit_local_launcher(tmp_path: Path) -> None:
    sweep = tmp_path / "submitit"
    multirun(
        [
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=5",
            "hydra.launcher.cpus_per_task=1",
            "optimizer.weight_decay=1e-5",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    jobs = job_dirs(sweep)
    assert len(jobs) == 1 and all((j / "test_metrics.json").is_file() for j in jobs)
    assert list((sweep / ".submitit").glob("*/*_result.pkl"))  # submitit ran them


@pytest.mark.slow
def test_optuna_search_of_three_trials(tmp_path: Path) -> None:
    sweep = tmp_path / "optuna"
    multirun(
        [
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.sampler.n_startup_trials=2",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    jobs = job_dirs(sweep)
    assert len(jobs) == 3
    lrs = [float(swept(j, ("optimizer.lr",))["optimizer.lr"]) for j in jobs]
    assert len(set(lrs)) == 3 and all(1e-5 <= lr <= 3e-3 for lr in lrs)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    # the sweeper maximised what main returned: the best val/dice over each trial
    best = max(v for j in jobs for _, v in read_curves(j / "tensorboard")[0]["val_dice"])
    assert results["best_value"] == pytest.approx(best, abs=1e-6)


# --- a sweep meets a user error or a Ctrl-C ------------------------------------------------
@pytest.mark.slow
def test_a_job_user_error_does_not_stop_the_sweep(tmp_path, monkeypatch, capfd) -> None:
    """Job 0 fails at run time with a user error (its one line); Hydra still runs job 1, then
    reports the failed job (exit 1, no traceback). Job 0 leaves no folder behind."""
    sweep = tmp_path / "sweep"
    missing = tmp_path / "gone.ckpt"  # found missing only when job 0 runs
    args = ["-m", *TINY, f"ckpt_path={missing},null", f"hydra.sweep.dir={sweep}"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert code == 1 and "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("segpets: error:")]
    assert len(errors) == 1 and str(missing) in errors[0], err[-3000:]
    assert "segpets: sweep job 0 stopped with a user error" in err
    assert [j.name for j in job_dirs(sweep)] == ["1"]
    assert (sweep / "1" / "test_metrics.json").is_file()


def test_every_job_is_checked_before_any_starts(tmp_path, monkeypatch, capfd) -> None:
    args = ["-m", *TINY, "optimizer.lr=1e-3,0,-1", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, r"optimizer\.lr must be > 0, got 0 \(sweep job .*lr=0")
    assert list(tmp_path.iterdir()) == []  # no job ran, no folder


def signal_group_when_saved(proc: subprocess.Popen, sweep: Path, jobs: int) -> None:
    """SIGINT to the sweep's whole process group (a terminal's Ctrl-C) once ``jobs`` jobs
    have written their epoch-0 last.ckpt (they are then in epoch 1, slowed down)."""
    deadline = time.monotonic() + 240
    while len(list(sweep.glob("*/checkpoints/last.ckpt"))) < jobs:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)


@pytest.mark.slow
def test_ctrl_c_on_a_joblib_sweep_saves_every_running_job(tmp_path: Path) -> None:
    """One Ctrl-C on a joblib sweep (2 workers, 3 jobs): the two running jobs finish their
    batch, save last.ckpt and print how to resume; job 2 never starts; exit 130, no
    traceback (before: joblib killed the saving workers, and a traceback)."""
    sweep = tmp_path / "sweep"
    slow = "+callbacks.slow._target_=tests.test_resume.SlowBatches"
    longer = ("trainer.max_epochs=", "trainer.limit_train_batches=")
    args = [*(a for a in TINY if not a.startswith(longer)), "trainer.max_epochs=3"]
    args += ["trainer.limit_train_batches=8", slow]
    args += ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer.lr=1e-3,2e-3,3e-3"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "segpets.train", "-m", *args, f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        env={**ENV, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    signal_group_when_saved(proc, sweep, jobs=2)
    err = proc.communicate(timeout=240)[1]
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert [j.name for j in job_dirs(sweep)] == ["0", "1"]
    for job in job_dirs(sweep):
        saved = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)
        # at the signal: in epoch 1 or 2, or at step 8 when it came between epochs 0 and 1
        # (in validation, before epoch 1's first batch); the resume line below is per job
        assert 8 <= saved["global_step"] < 24
        ckpt = override_arg("ckpt_path", job / "checkpoints" / "last.ckpt")
        assert f"  python -m segpets.train {' '.join(map(shlex.quote, args[:-3]))} " in err
        assert shlex.quote(ckpt) in err
