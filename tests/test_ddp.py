"""DDP on 2 CPU processes (gloo): metrics are reduced over the whole validation set — each
image counted once, whatever the shards and batch sizes — and only rank 0 writes
checkpoints, logs and reports."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from hydra.utils import instantiate

import segpets.train
from segpets.checkpoints.load import load_checkpoint, module_from_checkpoint
from segpets.metrics import PerImageDice
from tests.conftest import assert_one_line_error, cli
from tests.test_bad_inputs import BASE, pets  # noqa: F401

# 200 trainval lines, every 66th is validation: 3 images on 2 ranks, so one rank's shard is a
# single image (a one-image batch: the shape that once hung the metric all-gather)
VAL_EVERY = 66


def ddp_args(root: Path, batch_size: int) -> list[str]:
    return [
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_test_batches=2",
        f"data.root={root}",
        f"data.val_every={VAL_EVERY}",
        "data.image_size=64",
        f"data.batch_size={batch_size}",
        "data.num_workers=0",
        "model.width=4",
        "model.batch_norm=true",  # trainer=ddp's sync_batchnorm needs GPUs: CPU runs without it
        "logger=[csv,tensorboard]",
        "callbacks.progress_bar.refresh_rate=0",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [2, 1])
def test_two_process_ddp_reduces_metrics_and_rank0_writes(
    batch_size: int, mini_root: Path, tmp_path: Path
) -> None:
    proc = run_to_completion(ddp_args(mini_root, batch_size), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stdout + proc.stderr  # Lightning's gloo init
    assert "sync_batchnorm" in proc.stdout + proc.stderr  # the warning that it is off on CPU

    # only rank 0 writes: one run folder, one checkpoint of each kind, one log of each kind
    (run_dir,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert len(ckpts) == 2 and "last.ckpt" in ckpts, ckpts
    events = list(run_dir.rglob("events.out.tfevents.*"))  # …tfevents.<time>.<host>.<pid>.<n>
    assert events and len({e.name.split(".")[-2] for e in events}) == 1  # one writing process
    assert len(list(run_dir.rglob("metrics.csv"))) == 1
    assert proc.stdout.count("test/dice (per-image mean Dice)") == 1
    assert json.loads((run_dir / "test_metrics.json").read_text())["metrics"]["test/dice"] > 0

    # val/dice logged by the 2-process run == one process validating the same checkpoint
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    ddp_dice = [float(r["val/dice"]) for r in rows if r.get("val/dice")][-1]
    cfg, state_dict = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    module = module_from_checkpoint(cfg, state_dict)
    datamodule = instantiate(cfg.data)
    assert len(datamodule.split_names("val")) == 3
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    single = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    assert single["val/dice"] == pytest.approx(ddp_dice, abs=1e-5)


def run_to_completion(
    args: list[str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python -m segpets.train`` with every process it starts killed after ``timeout`` s: a
    rank that runs other collectives than the rest hangs, which must fail the test, not CI."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "segpets.train", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"segpets.train {' '.join(args)} hung for {timeout} s")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_per_image_states_stay_1d_for_one_image_batches() -> None:
    """torchmetrics squeezes a one-image batch's counts to 0-D; every rank must hold 1-D
    states of per-image counts, or their all-gathers differ and DDP validation hangs."""
    import torch

    metric = PerImageDice()
    preds = torch.tensor([[[[1, 0], [0, 0]]]])  # (1, 1, 2, 2)
    metric.update(preds, preds)
    metric.update(preds.repeat(2, 1, 1, 1), 1 - preds.repeat(2, 1, 1, 1))
    assert all(state.ndim == 1 for state in metric.tp + metric.fp + metric.fn)
    assert metric.per_image().tolist() == [1.0, 0.0, 0.0]
    single = PerImageDice()
    single.update(preds, preds)
    assert single.per_image().shape == (1,)


def test_eval_split_smaller_than_the_processes_is_one_line(pets, tmp_path, monkeypatch, capfd):  # noqa: F811
    """1 validation image on 2 processes: Lightning's sampler would assert; one line instead,
    before any process starts."""
    args = [*BASE, f"data.root={pets}", "trainer=ddp", "trainer.accelerator=cpu"]
    args += ["trainer.devices=2"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, r"the val split has 1 image\(s\) but the run uses 2 processes")
    assert not list(tmp_path.glob("outputs/**/*.ckpt"))
