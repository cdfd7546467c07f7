"""Checkpoints written by an earlier release still load, evaluate, predict, export and resume.

``tests/fixtures/run-v0.1.0/`` is a run folder written by segpets 0.1.0 (git f098d31): a width-4
BatchNorm UNet trained 2 epochs of 2 batches on the generated set (the overrides are in its
``.hydra/overrides.yaml``); its best checkpoint scored test Dice 0.3762 (``test_metrics.json``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from segpets.checkpoints.load import load_checkpoint, module_from_checkpoint

FIXTURE = Path(__file__).parent / "fixtures" / "run-v0.1.0"
BEST = FIXTURE / "checkpoints" / "epoch_000-dice_0.3685.ckpt"
LAST = FIXTURE / "checkpoints" / "last.ckpt"


def synthetic_root(cache: Path) -> Path:
    """The generated set the fixture trained on, generated here (same size and seed)."""
    from segpets.data.synthetic import generate

    return generate(cache / "synthetic-pets-n40-12-seed0", num_trainval=40, num_test=12)


def run(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_old_checkpoint_loads_into_todays_module() -> None:
    config, state_dict = load_checkpoint(LAST)
    assert "channels_last" not in config.model  # moved to the module's arguments
    assert config.module.channels_last is False
    module = module_from_checkpoint(config, state_dict)
    assert module.input_mean.tolist() == [0.5] * 3
    assert module(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32)


@pytest.mark.slow
def test_old_checkpoint_evaluates_to_its_recorded_dice(tmp_path: Path, isolated_cache) -> None:
    root = synthetic_root(isolated_cache)
    args = [f"ckpt_path={BEST}", f"data.root={root}", "progress_bar=false"]
    proc = run("segpets.eval", args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (out,) = (tmp_path / "outputs" / "eval" / "runs").iterdir()
    dice = json.loads((out / "metrics.json").read_text())["metrics"]["test/dice"]
    recorded = json.loads((FIXTURE / "test_metrics.json").read_text())["metrics"]["test/dice"]
    assert dice == pytest.approx(recorded, abs=1e-4)


@pytest.mark.slow
def test_old_checkpoint_resumes_predicts_and_exports(tmp_path: Path, isolated_cache) -> None:
    run_dir = tmp_path / "old-run"
    shutil.copytree(FIXTURE, run_dir)
    synthetic_root(isolated_cache)
    overrides = yaml.safe_load((FIXTURE / ".hydra" / "overrides.yaml").read_text())
    overrides = [o for o in overrides if not o.startswith("trainer.max_epochs=")]
    last = run_dir / "checkpoints" / "last.ckpt"
    proc = run("segpets.train", [*overrides, "trainer.max_epochs=3", f"ckpt_path={last}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (new,) = (tmp_path / "outputs" / "fixture" / "runs").iterdir()
    resumed = torch.load(new / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 2  # epochs 0-1 from 0.1.0, epoch 2 trained now
    image = next((isolated_cache / "synthetic-pets-n40-12-seed0" / "images").iterdir())
    predicted = tmp_path / "masks"
    proc = run(
        "segpets.predict",
        [f"ckpt_path={last}", f"input={image}", f"output_dir={predicted}"],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (predicted / f"{image.stem}_mask.png").is_file()
    onnx = tmp_path / "model.onnx"
    proc = run("segpets.export", [f"ckpt_path={last}", f"output={onnx}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
