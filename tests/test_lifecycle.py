"""A run's lifecycle as a demanding user meets it: resumes are exact (the best checkpoint and
best value too), a run tests the checkpoint it claims, a refused run leaves no trace, and the
run log holds what the console showed. Tiny deterministic CPU runs, in-process."""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

import segpets.train
from segpets.callbacks.resume import resume_command
from segpets.command.overrides import override_arg
from segpets.train import train
from tests.conftest import TINY_SYNTHETIC, assert_one_line_error, cli, compose_train
from tests.test_bad_inputs import snapshot

# lr 5e-2 peaks at epoch 0 (val/dice 0.456, val/loss 1.62), then gets worse: a resume after
# epoch 1 that forgot the best would call epoch 2 or 3 "best" (0.38 at most).
PEAKS_EARLY = [
    *TINY_SYNTHETIC,
    "trainer.deterministic=true",
    "seed=7",
    "optimizer.lr=5e-2",
    "model.batch_norm=true",
    "trainer.limit_val_batches=2",
    "logger=csv",
    "callbacks.val_images=null",
]


def val_curve(run_dir: Path, key: str) -> list[float]:
    rows = csv.DictReader((run_dir / "csv" / "metrics.csv").open())
    return [float(r[key]) for r in rows if r.get(key)]


def report_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "test_metrics.json").read_text())


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> tuple[Path, dict]:
    """4 epochs uninterrupted, optimising val/loss (a min metric, not the checkpoint's)."""
    out = tmp_path_factory.mktemp("straight")
    metrics = train(
        compose_train([*PEAKS_EARLY, "trainer.max_epochs=4", "optimized_metric=val/loss"], out)
    )
    return out, metrics


def test_best_of_optimized_metric_in_its_own_direction(straight) -> None:
    """What main returns to a sweeper: the best val/loss (min), not the last epoch's."""
    run, metrics = straight
    losses, dice = val_curve(run, "val/loss"), val_curve(run, "val/dice")
    assert len(losses) == 4 and min(losses) < losses[-1]
    assert metrics["best/val/loss"] == pytest.approx(min(losses), abs=1e-6)
    assert metrics["best/val/dice"] == pytest.approx(max(dice), abs=1e-6)
    cfg = compose_train([*PEAKS_EARLY, "optimized_metric=val/loss"], run)
    assert segpets.train.optimized_value(cfg, metrics) == metrics["best/val/loss"]


@pytest.mark.slow
def test_resume_into_a_new_folder_keeps_the_best(straight, tmp_path: Path) -> None:
    """2 epochs, then resumed to 4 in a new run folder: the same best checkpoint tested (its
    copy in the new folder), the same test_metrics.json, the same best values returned."""
    first, resumed = tmp_path / "first", tmp_path / "resumed"
    train(compose_train([*PEAKS_EARLY, "trainer.max_epochs=2", "optimized_metric=val/loss"], first))
    before = snapshot(first)
    last = first / "checkpoints" / "last.ckpt"
    overrides = [*PEAKS_EARLY, "trainer.max_epochs=4", "optimized_metric=val/loss"]
    metrics = train(compose_train([*overrides, f"ckpt_path={last}"], resumed))

    run, expected = straight
    assert snapshot(first) == before  # the old run folder is only read
    assert val_curve(resumed, "val/dice")[0] < max(val_curve(run, "val/dice"))  # the trap
    for key in ("best/val/dice", "best/val/loss", "test/dice", "test/iou"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-6), key
    ours, theirs = report_of(resumed), report_of(run)
    assert Path(ours["ckpt_path"]).name == Path(theirs["ckpt_path"]).name
    assert Path(ours["ckpt_path"]).parent == resumed / "checkpoints"  # self-contained folder
    assert ours["metrics"] == pytest.approx(theirs["metrics"], abs=1e-6)
    a, b = (torch.load(p["ckpt_path"], weights_only=True)["state_dict"] for p in (ours, theirs))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    """A finished 2-epoch run (with its test), in a folder of its own."""
    out = tmp_path / "finished"
    train(compose_train([*PEAKS_EARLY, "trainer.max_epochs=2"], out))
    return out


@pytest.mark.slow
def test_test_only_run_tests_the_given_checkpoint(finished, tmp_path, monkeypatch, capfd):
    """train=false ckpt_path=X tests X (not a fresh net) and says so."""
    best = Path(report_of(finished)["ckpt_path"])
    args = [*PEAKS_EARLY, "train=false", f"ckpt_path={best}"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    assert report_of(run)["ckpt_path"] == str(best)
    assert report_of(run)["metrics"] == pytest.approx(report_of(finished)["metrics"], abs=1e-6)
    assert f"[checkpoint: {best};" in cli.stdout


REFUSED_TESTS = {  # case -> (extra overrides, pattern of the one error line)
    "no checkpoint": (lambda best, tmp: [], r"train=false: set ckpt_path=<checkpoint>"),
    "no such file": (
        lambda best, tmp: [f"ckpt_path={tmp / 'nope.ckpt'}"],
        r"ckpt_path: no such file '.*nope\.ckpt'",
    ),
    "another image size": (
        lambda best, tmp: [f"ckpt_path={best}", "data.image_size=48"],
        r"was trained with another config \(data\.image_size: 32 there, 48 here",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(REFUSED_TESTS))
def test_test_only_run_refuses_what_it_cannot_test(case, finished, tmp_path, monkeypatch, capfd):
    extra, pattern = REFUSED_TESTS[case]
    args = [*PEAKS_EARLY, "train=false", *extra(report_of(finished)["ckpt_path"], tmp_path)]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, pattern)
    assert not (tmp_path / "outputs").exists()  # refused: no run folder left behind


@pytest.mark.slow
def test_resume_of_a_moved_finished_run(finished, tmp_path, monkeypatch, capfd) -> None:
    """Resuming a finished run from a moved folder: nothing to train (said plainly), and the
    best checkpoint is found beside the resumed one, copied in, and tested."""
    moved = tmp_path / "elsewhere" / "run"
    shutil.move(finished, moved)
    last = moved / "checkpoints" / "last.ckpt"
    args = [*PEAKS_EARLY, "trainer.max_epochs=2", f"ckpt_path={last}"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert code == 0 and "Traceback" not in err, err[-3000:]
    assert "already reached trainer.max_epochs=2 (2 epochs done)" in cli.stdout + err
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    assert Path(report_of(run)["ckpt_path"]).parent == run / "checkpoints"
    assert report_of(run)["metrics"] == pytest.approx(report_of(moved)["metrics"], abs=1e-6)

    for best in (moved / "checkpoints").glob("epoch_*.ckpt"):
        best.unlink()
    shutil.rmtree(tmp_path / "outputs")
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert code == 0 and "Traceback" not in err, err[-3000:]  # a best that is gone: dropped,
    dropped = r"records checkpoint files this run does not use .*epoch_\d+-dice_.*\.ckpt' \(no "
    assert re.search(dropped, cli.stdout + err)  # ... with one warning naming it
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    assert report_of(run)["ckpt_path"] is None  # no best left to test: the weights resumed


@pytest.mark.slow
def test_resume_true_only_resumes_a_matching_config(tmp_path, monkeypatch, capfd) -> None:
    """resume=true picks the newest last.ckpt of this task *with this run's config*; with
    none matching it refuses, naming the keys that differ."""
    base = [*PEAKS_EARLY, "trainer.max_epochs=1", "test=false"]
    other = ["optimizer.lr=1e-3", "data.image_size=48"]
    for args in (base, [*base, *other]):  # the newest run is the other experiment
        code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
        assert code == 0, err[-3000:]
    runs = sorted((tmp_path / "outputs" / "train" / "runs").iterdir())
    resume = [*PEAKS_EARLY, "trainer.max_epochs=2", "test=false", "resume=true"]
    args = [*resume, "optimizer.lr=3e-3"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    line = assert_one_line_error(code, err, r"resume=true: none of the 2 earlier last\.ckpt")
    assert "optimizer.lr: 0.001 there, 0.003 here" in line  # the newest: the other experiment
    assert "data.image_size: 48 there, 32 here" in line

    code, err = cli(segpets.train.main, resume, tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    assert f"continuing from '{runs[0] / 'checkpoints' / 'last.ckpt'}'" in cli.stdout + err


@pytest.mark.slow
def test_refused_run_leaves_an_existing_folder_byte_identical(tmp_path, monkeypatch, capfd):
    """A run refused because its folder holds checkpoints (or for its checkpoint) touches
    nothing there: .hydra/ and the log stay byte-identical; no other folder appears."""
    args = [*PEAKS_EARLY, "trainer.max_epochs=1", "test=false"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    before = snapshot(run)
    assert {p.name for p in before} >= {"config.yaml", "overrides.yaml", "train.log"}
    for extra in ([], ["optimizer.lr=3e-3"], [f"ckpt_path={tmp_path / 'nowhere.ckpt'}"]):
        again = [*args, f"hydra.run.dir={run}", *extra]
        code, err = cli(segpets.train.main, again, tmp_path, monkeypatch, capfd)
        assert code == 2, err[-3000:]
        assert snapshot(run) == before
    assert list((tmp_path / "outputs" / "train" / "runs").iterdir()) == [run]


def test_run_log_holds_what_the_console_showed(tmp_path, monkeypatch, capfd) -> None:
    """<task_name>.log: Lightning's messages, the tested checkpoint and the test Dice, all
    that the console showed, minus the progress bars."""
    args = [*TINY_SYNTHETIC, "callbacks.progress_bar.refresh_rate=1", "logger=csv"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    logged = (run / "train.log").read_text()
    assert "Epoch 1" in cli.stdout + err  # the console had progress bars ...
    assert "\r" not in logged and "Epoch 1" not in logged  # ... the log does not
    ckpt = report_of(run)["ckpt_path"]
    dice = report_of(run)["metrics"]["test/dice"]
    for line in (
        "GPU available: False",  # Lightning's own logger
        "`Trainer.fit` stopped: `max_epochs=2` reached.",
        f"Restoring states from the checkpoint path at {ckpt}",
        f"test/dice (per-image mean Dice) = {dice:.4f} on 4 of 12 test images  "  # a subset
        f"[checkpoint: {ckpt};",
    ):
        assert line in logged, line
    assert (run / ".hydra" / "overrides.yaml").is_file()


ODD = "run=1, lr [a] it's $HOME"  # characters Hydra's override grammar treats specially


def test_printed_resume_command_works_for_any_path(tmp_path: Path) -> None:
    """The preemption message's command, split as a shell does, gives Hydra back the path."""
    path = tmp_path / ODD / "${x}" / "checkpoints" / "epoch=3-step=40.ckpt"
    words = shlex.split(resume_command(path))
    assert words[:3] == ["python", "-m", "segpets.train"]
    assert compose_train(words[3:], tmp_path).ckpt_path == str(path)


@pytest.mark.slow
def test_the_refusal_names_a_resume_override_that_works(tmp_path, monkeypatch, capfd) -> None:
    """A run folder whose path has '=', ',', spaces, brackets, quotes: the refusal's
    ckpt_path=... works as printed, and resumes that run."""
    run = tmp_path / ODD
    args = [*PEAKS_EARLY, "trainer.max_epochs=1", "test=false"]
    into_run = override_arg("hydra.run.dir", run)
    code, err = cli(segpets.train.main, [*args, into_run], tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    code, err = cli(segpets.train.main, [*args, into_run], tmp_path, monkeypatch, capfd)
    line = assert_one_line_error(code, err, r"already holds checkpoints")
    printed = line.split("resume with ", 1)[1].rsplit(", or drop", 1)[0]
    (override,) = shlex.split(printed)
    resume = [*args[:-2], "trainer.max_epochs=2", "test=false", override]
    code, err = cli(segpets.train.main, resume, tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    (resumed,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    assert torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1


def test_logger_none_trains_without_the_learning_rate_monitor(tmp_path: Path) -> None:
    """logger=none (a shipped option): Lightning refuses a LearningRateMonitor without a
    logger, so the run drops it and trains, tests and writes its record as usual."""
    cfg = compose_train([*TINY_SYNTHETIC, "logger=none", "trainer.max_epochs=1"], tmp_path)
    assert "lr_monitor" in cfg.callbacks
    metrics = train(cfg)
    assert 0.0 <= metrics["test/dice"] <= 1.0
    assert report_of(tmp_path)["metrics"]["test/dice"] == pytest.approx(metrics["test/dice"])
