"""test_tta=hflip: the test after training scores flip TTA, as segpets.eval eval.tta=hflip does
on the same checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import segpets.eval
import segpets.train
from tests.conftest import TINY_SYNTHETIC, assert_one_line_error, cli


@pytest.mark.slow
def test_train_test_tta_equals_eval_tta(tmp_path: Path, monkeypatch, capfd) -> None:
    args = ["experiment=quickstart", "trainer.max_epochs=4", "data.num_trainval=60"]
    args += ["callbacks.progress_bar.refresh_rate=0", "logger=csv", "module.test_tta=hflip"]
    args += ["hydra.run.dir=run"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    record = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert record["tta"] == "hflip"
    dice = record["metrics"]["test/dice"]
    assert f"test/dice (per-image mean Dice, hflip TTA) = {dice:.4f}" in cli.stdout
    evaluated = [f"ckpt_path={record['ckpt_path']}", "eval.tta=hflip", "hydra.run.dir=ev"]
    code, err = cli(
        segpets.eval.main, [*evaluated, "progress_bar=false"], tmp_path, monkeypatch, capfd
    )
    assert code == 0, err[-3000:]
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert report["metrics"]["test/dice"] == pytest.approx(dice, abs=1e-4)
    assert report["metrics_without_tta"]["test/dice"] != pytest.approx(dice, abs=1e-6)


def test_unknown_test_tta_is_one_line(tmp_path: Path, monkeypatch, capfd) -> None:
    code, err = cli(
        segpets.train.main, [*TINY_SYNTHETIC, "module.test_tta=vflip"], tmp_path, monkeypatch, capfd
    )
    assert_one_line_error(code, err, r"module\.test_tta must be 'hflip' or null, got 'vflip'")
