"""The CLIs as a user runs them: in subprocesses, from a directory outside the repo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

QUIET = ["callbacks.progress_bar.refresh_rate=0"]
TINY_REAL = [
    "model.width=4",
    "data.image_size=64",
    "data.batch_size=8",
    "data.num_workers=0",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer=cpu",
]


def run(module: str, args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def only_run_dir(cwd: Path, task: str) -> Path:
    (run_dir,) = (cwd / "outputs" / task / "runs").iterdir()
    return run_dir


@pytest.mark.slow
def test_real_data_train_then_eval_reproduces_test_dice(mini_root: Path, tmp_path: Path) -> None:
    proc = run("segpets.train", [f"data.root={mini_root}", *TINY_REAL, *QUIET], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((only_run_dir(tmp_path, "train") / "test_metrics.json").read_text())
    assert 0.0 < report["metrics"]["test/dice"] <= 1.0
    assert report["ckpt_path"].endswith(".ckpt")

    proc = run(
        "segpets.eval", [f"ckpt_path={report['ckpt_path']}", f"data.root={mini_root}"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads((only_run_dir(tmp_path, "eval") / "metrics.json").read_text())
    for key, value in report["metrics"].items():
        assert evaluated["metrics"][key] == pytest.approx(value, abs=1e-4), key


@pytest.mark.slow
def test_missing_data_root_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = run(
        "segpets.train", [f"data.root={tmp_path / 'nowhere'}", "trainer=cpu", *QUIET], tmp_path
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("segpets: error:")]
    assert len(errors) == 1 and str(tmp_path / "nowhere") in errors[0]
    assert "data.root=" in errors[0]


@pytest.mark.slow
def test_eval_refuses_a_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    bogus = tmp_path / "model.ckpt"
    bogus.write_bytes(b"not a checkpoint")
    proc = run("segpets.eval", [f"ckpt_path={bogus}"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"cannot load checkpoint '{bogus}'" in proc.stderr


@pytest.mark.slow
def test_runs_started_together_get_their_own_folders(tmp_path: Path) -> None:
    args = ["experiment=quickstart", "debug=fast_dev_run", *QUIET]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "segpets.train", *args],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
    assert len(list((tmp_path / "outputs" / "debug" / "runs").iterdir())) == 2


# Counts the HTTP requests made while importing segpets and then albumentations.
_COUNT_REQUESTS = """
import urllib.request
calls = []
def refuse(self, *args, **kwargs):
    calls.append(args)
    raise OSError("offline")
urllib.request.OpenerDirector.open = refuse
import segpets, albumentations
print(len(calls))
"""


@pytest.mark.slow
@pytest.mark.parametrize(("user_value", "requests"), [(None, 0), ("0", 1)])
def test_albumentations_update_check_is_off_unless_the_user_set_it(
    user_value: str | None, requests: int
) -> None:
    """albumentations asks PyPI for its version at import; segpets turns that off by default
    (every process and subprocess test imports it, often offline) but keeps a user's setting."""
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    if user_value is not None:
        env["NO_ALBUMENTATIONS_UPDATE"] = user_value
    proc = subprocess.run(
        [sys.executable, "-c", _COUNT_REQUESTS],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.split()[-1]) == requests
