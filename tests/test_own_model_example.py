"""examples/own_model, as its README runs it, from a copy outside the repository: a net and
configs of the user's own trained, evaluated, exported and predicted with."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import run_segpets

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_model"
VOUCH = "trusted_targets=[tinynet.TinyUNet]"
# the README's experiment, shortened: fewer and smaller images, one short epoch
SHORT = [
    "data.num_trainval=20",
    "data.num_test=4",
    "data.image_size=32",
    "data.batch_size=8",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "logger=csv",
    "callbacks.val_images=null",
    "callbacks.progress_bar.refresh_rate=0",
]


@pytest.mark.slow
def test_own_model_example(tmp_path: Path, isolated_cache: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__"))
    run_segpets("train", ["--config-dir", "configs", "experiment=tiny_quick", *SHORT], project)
    (run_dir,) = (project / "outputs" / "tiny_quick" / "runs").iterdir()
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    config = json.dumps(torch.load(ckpt, weights_only=True)["hyper_parameters"])
    assert '"_target_": "tinynet.TinyUNet"' in config

    run_segpets("eval", [f"ckpt_path={ckpt}", "progress_bar=false", VOUCH], project)
    (eval_dir,) = (project / "outputs" / "eval" / "runs").iterdir()
    assert 0.0 <= json.loads((eval_dir / "metrics.json").read_text())["metrics"]["test/dice"] <= 1

    run_segpets("export", [f"ckpt_path={ckpt}", "output=tiny.onnx", VOUCH], project)
    images = next(isolated_cache.glob("synthetic-pets-n20-4-seed0/images"))
    args = ["ckpt_path=tiny.onnx", f"input={images}", "output_dir=masks", VOUCH]
    run_segpets("predict", [*args, "progress_bar=false"], project)
    assert len(list((project / "masks").glob("*_mask.png"))) == 24
