"""DDP on 2 CPU processes (gloo): metrics are reduced over the whole validation set — each
image counted once — and only rank 0 writes checkpoints, logs and reports."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from hydra.utils import instantiate

from segpets.build import build_module, load_checkpoint

VAL_EVERY = 13  # 200 trainval lines → 15 validation images: odd, so 2 ranks cannot split evenly


@pytest.mark.slow
def test_two_process_ddp_reduces_metrics_and_rank0_writes(mini_root: Path, tmp_path: Path) -> None:
    args = [
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_test_batches=2",
        f"data.root={mini_root}",
        f"data.val_every={VAL_EVERY}",
        "data.image_size=64",
        "data.batch_size=4",
        "data.num_workers=0",
        "model.width=4",
        "logger=[csv,tensorboard]",
        "callbacks.progress_bar.refresh_rate=0",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "segpets.train", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stdout + proc.stderr  # Lightning's gloo init

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
    module = build_module(cfg, with_optimizer=False)
    module.load_state_dict(state_dict)
    datamodule = instantiate(cfg.data)
    assert len(datamodule.split_names("val")) == 15
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    single = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    assert single["val/dice"] == pytest.approx(ddp_dice, abs=1e-5)
