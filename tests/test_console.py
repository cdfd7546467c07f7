"""A quiet console and a clean run log, as a user's terminal shows a real command:

* no Lightning "💡 Tip" adverts, no "`Trainer(limit_*_batches=1.0)` was configured" notices
  for segpets' own trainer defaults, no Optuna/alembic "setup plugin" lines;
* at start, the config tree and one line naming the run folder, split sizes, device and
  precision; the tree also saved beside the run;
* the run log holds the console's messages as plain text: no progress-bar control sequences;
* ``debug=profiler`` prints the profiler's summary, with anomaly detection off.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from segpets.command.console import plain_text
from tests.conftest import TINY_SYNTHETIC, compose_train, run_segpets
from tests.test_sweeps import ENV

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# TINY_SYNTHETIC with the progress bar drawn (its control sequences are what the log must
# not keep) and the test split left whole (limit_test_batches=1 is a notice the user asked for)
ARGS = [
    *(a for a in TINY_SYNTHETIC if not a.startswith(("callbacks.progress_bar", "trainer.limit_t"))),
    "trainer.limit_train_batches=2",
    "callbacks.progress_bar.refresh_rate=1",
]


def segpets_train(args: list[str], cwd: Path) -> tuple[str, str]:
    proc = run_segpets("train", args, cwd, env=ENV)
    return proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def optuna_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An Optuna search of one trial (its plugin is what brings alembic's lines)."""
    cwd = tmp_path_factory.mktemp("console")
    sweep = cwd / "sweep"
    args = [*ARGS, "hparams_search=optuna", "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={sweep}"]
    out, err = segpets_train(args, cwd)
    return {"console": out + err, "job": sweep / "0"}


@pytest.mark.slow
def test_no_adverts_no_notices_about_our_own_defaults(optuna_run: dict) -> None:
    console = optuna_run["console"]
    assert "💡" not in console and "litlogger" not in console and "litmodels" not in console
    assert "was configured so" not in console  # limit_*_batches: null, Lightning's default
    assert "alembic" not in console and "setup plugin" not in console
    assert "LeafSpec" not in console  # Lightning's own deprecation under torch 2.14
    assert "Traceback" not in console


@pytest.mark.slow
def test_start_says_config_folder_splits_device_precision(optuna_run: dict) -> None:
    console, job = optuna_run["console"], optuna_run["job"]
    lines = [line for line in console.splitlines() if line.startswith("run folder:")]
    assert lines == [
        f"run folder: {job.resolve()} | data: 36 train / 4 val / 12 test images | "
        "device: cpu x1 | precision: 32-true"
    ]
    assert re.search(r"^CONFIG\n├── data\n", console, flags=re.M)
    tree = (job / "config_tree.log").read_text()
    assert tree.startswith("CONFIG\n├── data\n") and "sampler" not in tree  # the task's config
    assert "num_trainval: 40" in tree and not CONTROL.search(tree)


@pytest.mark.slow
def test_run_log_is_the_console_without_control_characters(optuna_run: dict) -> None:
    log = (optuna_run["job"] / "train.log").read_text()
    assert not CONTROL.search(log), [line for line in log.splitlines() if CONTROL.search(line)]
    console = {plain_text(part).rstrip() for part in re.split(r"[\r\n]", optuna_run["console"])}
    missing = [line for line in log.splitlines() if line and line not in console]
    assert missing == []  # every line of the log is a line the console showed
    for message in ("Seed set to 42", "run folder:", "`Trainer.fit` stopped", "test/dice ("):
        assert message in log
    assert "Epoch 1" not in log  # progress bars stay on the console


@pytest.mark.slow
def test_profiler_prints_its_summary_without_anomaly_detection(tmp_path: Path) -> None:
    out, err = segpets_train([*ARGS, "debug=profiler"], tmp_path)
    assert "FIT Profiler Report" in out + err and "run_training_epoch" in out + err
    assert not list(tmp_path.rglob("*profile*.txt"))  # printed, not hidden in a file
    (log,) = tmp_path.glob("outputs/debug/runs/*/debug.log")
    assert "FIT Profiler Report" in log.read_text()
    assert "detect_anomaly: false" in (log.parent / "config_tree.log").read_text()


def test_profiler_config_turns_anomaly_detection_off(tmp_path: Path) -> None:
    cfg = compose_train(["debug=profiler"], tmp_path)
    assert cfg.trainer.detect_anomaly is False
    assert compose_train(["debug=default"], tmp_path).trainer.detect_anomaly is True
    assert "dirpath" not in cfg.trainer.profiler and "filename" not in cfg.trainer.profiler


def test_segpets_trainer_defaults_are_lightnings(tmp_path: Path) -> None:
    """null, Lightning's own default ("all batches"): Lightning says nothing about it."""
    cfg = compose_train([], tmp_path)
    limits = ("limit_train_batches", "limit_val_batches", "limit_test_batches")
    assert [cfg.trainer[k] for k in limits] == [None, None, None]


def test_plain_text_drops_escape_sequences_and_controls() -> None:
    assert plain_text("\x1b[A\x1b[32mgreen\x1b[0m\tok\x07\n") == "green\tok\n"
