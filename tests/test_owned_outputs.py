"""A folder is owned by one run, and what a run writes is whole (issue 23.4, 23.5, 23.10).

* two trainings (or two predicts) started into one folder: the second is refused in one line
  before writing anything; eval/predict never write into a training run's folder;
* predict never writes through a symbolic link planted in its output folder;
* predict killed mid-write (monkeypatched writer, or a real SIGKILL/SIGTERM/SIGINT) leaves no
  torn output, and a rerun completes what is missing; export overwrite=true killed mid-write
  keeps the old model;
* every file train and eval write for a user is renamed into place whole;
* refused runs leave nothing behind (a refused eval, an offline ``data.download=true``, a
  ``data=folder`` run refused after its pre-scan).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

import segpets.eval
import segpets.export
import segpets.predict
import segpets.train
from segpets.export import export
from segpets.predict import predict
from tests.conftest import (
    REPO,
    TINY_SYNTHETIC,
    assert_one_line_error,
    cli,
    compose_config,
)
from tests.test_bad_inputs import snapshot

QUIET = ["logger=csv", "callbacks.val_images=null", "test=false", "trainer.max_epochs=1"]
KINDS = ("mask", "overlay", "prob")


def compose_cfg(name: str, overrides: list[str]):
    return compose_config(name, [*overrides, *(["progress_bar=false"] * (name != "export"))])


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    """Three small photos of odd sizes (random, fixed seed)."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(40, 30), (33, 47), (52, 28)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(folder / f"p{i}.png")
    return folder


def outputs_of(folder: Path) -> dict[str, np.ndarray]:
    """name → pixels of every PNG in ``folder`` (each decoded fully: a torn file fails)."""
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


class Sleepy(L.Callback):
    """Test-only: every training batch takes 3 s, so a run stays in its first epoch (no
    checkpoint written yet) while a second run starts."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(3)


def popen(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = (cwd / "first-stderr.txt").open("w")
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=log)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    start = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, "the first run ended before it started writing"
        assert time.monotonic() - start < timeout, f"{path} never appeared"
        time.sleep(0.2)


# --- one run per folder ---------------------------------------------------------------------
@pytest.mark.slow
def test_a_second_training_in_a_running_runs_folder_is_refused(tmp_path, monkeypatch, capfd):
    """Two trainings with one hydra.run.dir, the second started while the first is in its
    first epoch (no checkpoint yet): the second is refused in one line and writes nothing."""
    run = tmp_path / "run"
    base = [*TINY_SYNTHETIC, *QUIET, f"hydra.run.dir={run}"]
    first = popen(
        [sys.executable, "-m", "segpets.train", *base,
         "+callbacks.sleepy._target_=tests.test_owned_outputs.Sleepy"],
        tmp_path,
    )  # fmt: skip
    try:
        wait_for(run / ".hydra" / "overrides.yaml", first)
        before = snapshot(run / ".hydra")
        code, err = cli(segpets.train.main, [*base, "seed=5"], tmp_path, monkeypatch, capfd)
        assert_one_line_error(code, err, rf"hydra\.run\.dir: '{run}' is in use by another run")
        assert snapshot(run / ".hydra") == before
        assert first.wait(timeout=300) == 0, (tmp_path / "first-stderr.txt").read_text()[-3000:]
    finally:
        first.kill()
    assert "seed=5" not in (run / ".hydra" / "overrides.yaml").read_text()


SLOW_PREDICT = """
import runpy, sys, time
from PIL import Image
real = Image.Image.save
def slow(self, *args, **kwargs):
    time.sleep(1.5)
    return real(self, *args, **kwargs)
Image.Image.save = slow
sys.argv = ["segpets.predict", *sys.argv[1:]]
runpy.run_module("segpets.predict", run_name="__main__")
"""


@pytest.mark.slow
def test_a_second_predict_into_a_running_predicts_folder_is_refused(
    tiny_ckpt, pictures, tmp_path, monkeypatch, capfd
):
    """Even with overwrite=true, a predict into a folder another predict is writing is refused
    in one line; the first finishes with its own masks."""
    out = tmp_path / "masks"
    args = [f"ckpt_path={tiny_ckpt}", f"input={pictures}", f"output_dir={out}"]
    first = popen([sys.executable, "-c", SLOW_PREDICT, *args, "progress_bar=false"], tmp_path)
    try:
        wait_for(out / "predict.log", first)
        second = [*args, "threshold=0.9", "overwrite=true", "progress_bar=false"]
        code, err = cli(segpets.predict.main, second, tmp_path, monkeypatch, capfd)
        assert_one_line_error(code, err, rf"output_dir: '{out}' is in use by another run")
        assert first.wait(timeout=300) == 0, (tmp_path / "first-stderr.txt").read_text()[-3000:]
    finally:
        first.kill()
    reference = tmp_path / "reference"
    assert predict(compose_cfg("predict", [*args[:2], f"output_dir={reference}"])) == []
    mine = outputs_of(out)
    assert mine.keys() == outputs_of(reference).keys()
    assert all(np.array_equal(mine[k], v) for k, v in outputs_of(reference).items())


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training run folder written by the CLI (record, log, checkpoints, claim)."""
    cwd = tmp_path_factory.mktemp("cli-run")
    run = cwd / "run"
    with pytest.MonkeyPatch.context() as mp:
        code, err = cli(segpets.train.main, [*TINY_SYNTHETIC, *QUIET, f"hydra.run.dir={run}"],
                        cwd, mp, _NoCapture())  # fmt: skip
    assert code == 0, err
    return run


class _NoCapture:
    """What :func:`cli` needs of pytest's ``capfd`` when nothing is captured."""

    def readouterr(self):
        return type("Captured", (), {"out": "", "err": ""})()


@pytest.mark.slow
def test_eval_and_predict_never_write_into_a_training_runs_folder(
    trained_run, pictures, tmp_path, monkeypatch, capfd
):
    """segpets.eval hydra.run.dir=<training run> (it would rewrite .hydra/), predict
    output_dir=<training run>, and a new training there: each refused in one line; the run
    folder stays byte-identical."""
    before = snapshot(trained_run)
    last = trained_run / "checkpoints" / "last.ckpt"
    folder = rf"'{trained_run}' already holds the files of another run \(segpets\.train"
    code, err = cli(segpets.eval.main, [f"ckpt_path={last}", f"hydra.run.dir={trained_run}"],
                    tmp_path, monkeypatch, capfd)  # fmt: skip
    assert_one_line_error(code, err, rf"hydra\.run\.dir: {folder}")
    code, err = cli(segpets.predict.main, [f"ckpt_path={last}", f"input={pictures}",
                    f"output_dir={trained_run}"], tmp_path, monkeypatch, capfd)  # fmt: skip
    assert_one_line_error(code, err, rf"output_dir: {folder}")
    (trained_run / "checkpoints").rename(tmp_path / "moved")  # no checkpoints in the way now
    try:
        args = [*TINY_SYNTHETIC, *QUIET, f"hydra.run.dir={trained_run}"]
        code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
        assert_one_line_error(code, err, rf"hydra\.run\.dir: {folder}")
    finally:
        (tmp_path / "moved").rename(trained_run / "checkpoints")
    assert snapshot(trained_run) == before


def test_predict_never_writes_through_a_link_in_its_output_folder(
    tiny_ckpt, pictures, tmp_path, monkeypatch, capfd
):
    """A link planted at an output's name, or as a sub-folder on the way to one: refused in
    one line (even with overwrite=true); nothing is written outside output_dir."""
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / "p0_mask.png").symlink_to(victim)
    args = [f"ckpt_path={tiny_ckpt}", f"input={pictures}", f"output_dir={out}", "overwrite=true"]
    code, err = cli(segpets.predict.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, rf"output_dir: '{out / 'p0_mask.png'}' is a symbolic link")
    assert victim.read_text() == "keep me" and sorted(outside.iterdir()) == [victim]

    (out / "p0_mask.png").unlink()
    (pictures / "sub").mkdir()
    (pictures / "p2.png").rename(pictures / "sub" / "p2.png")
    (out / "sub").symlink_to(outside, target_is_directory=True)
    args[1] = f"input={pictures}/**/*.png"
    code, err = cli(segpets.predict.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, rf"output_dir: '{out / 'sub'}' is a symbolic link")
    assert sorted(outside.iterdir()) == [victim]


# --- writes a kill cannot tear --------------------------------------------------------------
def torn_on(call: int, monkeypatch):
    """Make the ``call``-th PIL save write half a PNG to its target, then raise
    ``KeyboardInterrupt`` (a Ctrl-C that lands mid-write)."""
    real = Image.Image.save
    calls = []

    def save(self, fp, format=None, **params):
        calls.append(fp)
        if len(calls) == call:
            buffer = io.BytesIO()
            real(self, buffer, format="PNG")
            Path(fp).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            raise KeyboardInterrupt
        return real(self, fp, format=format, **params)

    monkeypatch.setattr(Image.Image, "save", save)


def test_predict_killed_mid_write_then_rerun_completes(tiny_ckpt, pictures, tmp_path, monkeypatch):
    """A kill during the 5th write (2nd input's overlay): no torn file under a final name; a
    rerun without overwrite writes only what is missing and matches an uninterrupted run;
    another rerun writes nothing."""
    out, reference = tmp_path / "out", tmp_path / "reference"
    args = [f"ckpt_path={tiny_ckpt}", f"input={pictures}", "overlay=true", "probabilities=true"]
    assert predict(compose_cfg("predict", [*args, f"output_dir={reference}"])) == []
    cfg = compose_cfg("predict", [*args, f"output_dir={out}"])
    torn_on(5, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        predict(cfg)
    monkeypatch.undo()
    outputs_of(out)  # every file under its final name decodes: none is torn
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("p0_*.png")}
    assert len(first) == 3 and (out / "p1_mask.png").is_file()
    assert predict(cfg) == []  # completes instead of refusing: "already exist"
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("p0_*.png")} == first  # kept
    done = outputs_of(out)
    assert done.keys() == outputs_of(reference).keys() and len(done) == 9
    assert all(np.array_equal(done[k], v) for k, v in outputs_of(reference).items())
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert (
        predict(cfg) == [] and {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == stamps
    )


KILLED_PREDICT = """
import os, runpy, signal, sys, time
from pathlib import Path
from PIL import Image
real, calls = Image.Image.save, []
def dying(self, fp, format=None, **params):
    calls.append(fp)
    if len(calls) == 5:
        Path(fp).write_bytes(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(20))  # half written
        os.kill(os.getpid(), int(sys.argv[1]))
        time.sleep(10)  # SIGINT arrives as KeyboardInterrupt here
    return real(self, fp, format=format, **params)
Image.Image.save = dying
sys.argv = ["segpets.predict", *sys.argv[2:]]
runpy.run_module("segpets.predict", run_name="__main__")
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name
)
def test_predict_killed_by_a_signal_then_rerun_completes(sig, tiny_ckpt, pictures, tmp_path):
    out, reference = tmp_path / "out", tmp_path / "reference"
    args = [f"ckpt_path={tiny_ckpt}", f"input={pictures}", "overlay=true", "probabilities=true"]
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_PREDICT, str(int(sig)), *args, f"output_dir={out}"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0, proc.stderr[-2000:]
    outputs_of(out)  # nothing torn under a final name
    assert predict(compose_cfg("predict", [*args, f"output_dir={out}"])) == []
    assert predict(compose_cfg("predict", [*args, f"output_dir={reference}"])) == []
    done, expected = outputs_of(out), outputs_of(reference)
    assert done.keys() == expected.keys() and len(done) == 9
    assert all(np.array_equal(done[k], v) for k, v in expected.items())
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]  # leftovers removed


@pytest.mark.slow  # two exports and a parity check each: ~2.5 s for TorchScript
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_overwrite_killed_mid_write_keeps_the_old_model(
    fmt, tiny_ckpt, tmp_path, monkeypatch
):
    """overwrite=true: a kill while the new file is written, or a failed parity check, leaves
    the old model complete (never gone, never 0 bytes), and no leftover file."""
    output = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    args = [f"ckpt_path={tiny_ckpt}", f"format={fmt}", f"output={output}", "overwrite=true"]
    export(compose_cfg("export", args))
    old = output.read_bytes()
    module, name = (torch.onnx, "export") if fmt == "onnx" else (torch.jit, "save")

    def killed(*args, **kwargs):  # torch.onnx.export(net, args, f, ...), torch.jit.save(m, f)
        Path(args[2] if fmt == "onnx" else args[1]).write_bytes(b"")  # what a kill leaves
        raise KeyboardInterrupt

    monkeypatch.setattr(module, name, killed)
    with pytest.raises(KeyboardInterrupt):
        export(compose_cfg("export", args))
    monkeypatch.undo()
    assert output.read_bytes() == old and sorted(tmp_path.iterdir()) == [output]

    def mismatch(*args, **kwargs):
        raise RuntimeError("export differs from PyTorch")

    monkeypatch.setattr(segpets.export, "parity", mismatch)
    with pytest.raises(RuntimeError, match="differs"):
        export(compose_cfg("export", [*args[:2], f"output={output}", "overwrite=true"]))
    assert output.read_bytes() == old and sorted(tmp_path.iterdir()) == [output]


RECORDED_ELSEWHERE = (".segpets-run", "train.log", "eval.log")  # the claim, append-only logs
LOGGERS = ("tensorboard", "csv")  # TensorBoard's and Lightning's own append-only files


def written_whole(run: Path, replaced: set[str]) -> list[Path]:
    """Files under ``run`` that were not renamed into place (loggers' and logs aside)."""
    return [
        p
        for p in run.rglob("*")
        if p.is_file()
        and p.name not in RECORDED_ELSEWHERE
        and p.relative_to(run).parts[0] not in LOGGERS
        and str(p) not in replaced
    ]


@pytest.mark.slow
def test_every_file_train_and_eval_write_is_renamed_into_place(
    tiny_ckpt, tmp_path, monkeypatch, capfd, replaced_paths
):
    """Records, checkpoints, test_metrics.json, metrics.json, the CSVs, the worst panels:
    each written beside its target and renamed over it (a kill leaves none torn)."""
    replaced = replaced_paths
    run = tmp_path / "train-run"
    args = [*TINY_SYNTHETIC, "logger=csv", "trainer.max_epochs=1", f"hydra.run.dir={run}"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    assert (run / "test_metrics.json").is_file() and (run / ".hydra" / "config.yaml").is_file()
    assert written_whole(run, replaced) == []
    evaluated = tmp_path / "eval-run"
    args = [f"ckpt_path={tiny_ckpt}", "split=val", "eval.worst_k=2", f"hydra.run.dir={evaluated}"]
    code, err = cli(segpets.eval.main, [*args, "progress_bar=false"], tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    assert len(list((evaluated / "worst").glob("*.png"))) == 2
    assert written_whole(evaluated, replaced) == []


# --- refused runs leave nothing -------------------------------------------------------------
def test_a_refused_eval_leaves_no_folder(tiny_ckpt, tmp_path, monkeypatch, capfd) -> None:
    """Data missing where eval looks: refused before anything is written, no run folder."""
    args = [f"ckpt_path={tiny_ckpt}", f"data.root={tmp_path / 'nowhere'}"]
    code, err = cli(segpets.eval.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, r"Oxford-IIIT Pet not found at '.*nowhere'")
    assert not (tmp_path / "outputs").exists()


def test_offline_download_leaves_no_run_and_no_empty_data_folder(tmp_path, monkeypatch, capfd):
    """data.download=true without a network: one line, no run folder, and no empty
    data/oxford-iiit-pet that scripts/get_data.sh would then refuse to replace."""

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    root = tmp_path / "data" / "oxford-iiit-pet"
    args = ["trainer=cpu", "model.width=4", "data.num_workers=0", "data.download=true"]
    code, err = cli(segpets.train.main, [*args, f"data.root={root}"], tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, r"downloading Oxford-IIIT Pet to '.*oxford-iiit-pet' failed")
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "data").exists()


def test_a_refused_folder_data_run_writes_no_split(tmp_path, monkeypatch, capfd) -> None:
    """data=folder: the split is written when the run starts, not while it is checked, so a
    run refused after the pre-scan (here: no such checkpoint) leaves no folder."""
    rng = np.random.default_rng(0)
    for kind in ("images", "masks"):
        (tmp_path / kind).mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(
            tmp_path / "images" / f"s{i}.png"
        )
        mask = np.zeros((32, 32), np.uint8)
        mask[8:24, 8:24] = 255
        Image.fromarray(mask).save(tmp_path / "masks" / f"s{i}.png")
    args = ["data=folder", f"data.images={tmp_path / 'images'}", f"data.masks={tmp_path / 'masks'}"]
    args += ["data.image_size=32", "data.num_workers=0", "model.width=4", "trainer=cpu"]
    args += [f"ckpt_path={tmp_path / 'nope.ckpt'}"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, r"ckpt_path: no such file")
    assert not (tmp_path / "outputs").exists()
