"""Paths a checkpoint carries are data (issue 23.1): resuming from a crafted ``last.ckpt``
never reads, copies, tests or deletes a file it names unless that is a segpets checkpoint of
the same net in the checkpoint's own folder; the others are dropped with one warning. The
same for the names of a ``data=folder`` split, the files ``segpets.eval`` would take from a
stored data config, and ``resume=true`` looking through planted run folders."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import segpets.eval
from segpets.checkpoints.resume import resolve_ckpt_path
from segpets.command.build import instantiate_or_explain
from segpets.errors import DataError
from segpets.train import train
from tests.conftest import TINY_SYNTHETIC, compose_config, compose_train

RUN = [
    *TINY_SYNTHETIC,
    "trainer.max_epochs=1",
    "test=false",
    "logger=csv",
    "callbacks.val_images=null",
    "seed=3",
]
SECRET = "SEGPETS_TEST_TOKEN=do-not-copy-me"
MONITOR = "ModelCheckpoint{'monitor': 'val/dice'"


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 1-epoch run: checkpoints/{epoch_000-dice_*.ckpt, last.ckpt}."""
    out = tmp_path_factory.mktemp("genuine")
    train(compose_train(RUN, out))
    return out


def monitor_state(ckpt: dict) -> dict:
    (key,) = [k for k in ckpt["callbacks"] if k.startswith(MONITOR)]
    return ckpt["callbacks"][key]


def files_holding(folder: Path, text: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def plant(genuine: Path, folder: Path, outside: Path) -> dict[str, Path]:
    """``folder/checkpoints/last.ckpt``: the genuine last.ckpt whose best-checkpoint records
    name /proc/self/environ, a file outside, a non-checkpoint file inside, a link out, a
    ``../`` path and a checkpoint of another net, beside the genuine best (named too)."""
    ckpts = folder / "checkpoints"
    ckpts.mkdir(parents=True)
    best = next((genuine / "checkpoints").glob("epoch_*.ckpt"))
    shutil.copy(best, ckpts / best.name)
    outside.mkdir(exist_ok=True)
    files = {"secret": outside / "secret.txt", "real": outside / "real.ckpt"}
    files["secret"].write_text(SECRET)
    shutil.copy(best, files["real"])  # a genuine checkpoint, but outside the folder
    (ckpts / "notes.ckpt").write_text(SECRET)  # inside, not a checkpoint
    (ckpts / "link.ckpt").symlink_to(files["real"])  # inside, a link out
    other = torch.load(best, weights_only=True)
    other["hyper_parameters"]["config"]["model"]["width"] = 8  # another net
    torch.save(other, ckpts / "other.ckpt")
    ckpt = torch.load(genuine / "checkpoints" / "last.ckpt", weights_only=True)
    state = monitor_state(ckpt)
    score = state["best_model_score"]
    named = {
        "/proc/self/environ": 0.99,
        str(files["secret"]): 0.98,
        str(ckpts / "notes.ckpt"): 0.97,
        str(ckpts / "link.ckpt"): 0.96,
        f"{ckpts}/../../{outside.name}/secret.txt": 0.95,
        str(ckpts / "other.ckpt"): 0.94,
    }
    state["best_k_models"] = {**{k: torch.tensor(v) for k, v in named.items()}, best.name: score}
    state["best_model_path"], state["best_model_score"] = "/proc/self/environ", torch.tensor(0.99)
    state["kth_best_model_path"], state["kth_value"] = str(files["secret"]), torch.tensor(0.98)
    torch.save(ckpt, ckpts / "last.ckpt")
    return {**files, "best": ckpts / best.name, "last": ckpts / "last.ckpt"}


@pytest.mark.slow
def test_resume_uses_only_checkpoints_in_its_own_folder(genuine, tmp_path, monkeypatch, caplog):
    """Every bad entry is dropped with one warning naming each; the genuine best is carried
    over and the run tests a checkpoint of its own folder; nothing named is copied or read
    into the new run, and the files named outside are untouched."""
    monkeypatch.setenv("SEGPETS_TEST_TOKEN", "do-not-copy-me")  # in /proc/self/environ too
    planted = plant(genuine, tmp_path / "planted", tmp_path / "outside")
    before = {k: p.read_bytes() for k, p in planted.items() if k in ("secret", "real")}
    new = tmp_path / "new"
    with caplog.at_level(logging.WARNING):
        metrics = train(compose_train([*RUN, "trainer.max_epochs=2", "test=true",
                                       f"ckpt_path={planted['last']}"], new))  # fmt: skip
    assert 0.0 <= metrics["test/dice"] <= 1.0
    assert files_holding(new, SECRET) == []  # neither the file nor the environment
    names = {p.name for p in (new / "checkpoints").iterdir()}
    assert not names & {"environ", "secret.txt", "notes.ckpt", "link.ckpt", "other.ckpt"}
    tested = Path(segpets_report(new)["ckpt_path"])
    assert tested.parent == new / "checkpoints" and tested.is_file()
    assert {k: planted[k].read_bytes() for k in before} == before
    warnings = [r.getMessage() for r in caplog.records if "does not use" in r.getMessage()]
    assert len(warnings) == 1, warnings
    for entry in ("/proc/self/environ", "secret.txt", "notes.ckpt", "link.ckpt", "other.ckpt"):
        assert entry in warnings[0], entry
    assert planted["best"].name not in warnings[0]  # the genuine best is kept


def segpets_report(run: Path) -> dict:
    import json

    return json.loads((run / "test_metrics.json").read_text())


@pytest.mark.slow
def test_resume_in_place_never_deletes_a_file_a_checkpoint_names(genuine, tmp_path: Path):
    """Resuming in the checkpoint's own folder: Lightning deletes the k-th best when a better
    one comes; a crafted k-th best '<folder>/../../victim' must not be that file."""
    run = tmp_path / "run"
    shutil.copytree(genuine / "checkpoints", run / "checkpoints")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    state = monitor_state(ckpt)
    bad = f"{run / 'checkpoints'}/../../victim.txt"
    state["best_k_models"] = {bad: torch.tensor(-1.0)}
    state["best_model_path"] = state["kth_best_model_path"] = bad
    state["best_model_score"] = state["kth_value"] = torch.tensor(-1.0)
    state["dirpath"] = os.path.realpath(run / "checkpoints")  # resumed where it was written
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    last = run / "checkpoints" / "last.ckpt"
    train(compose_train([*RUN, "trainer.max_epochs=2", f"ckpt_path={last}"], run))
    assert victim.read_text() == "keep me"


@pytest.mark.slow
def test_resume_true_ignores_a_run_folder_that_is_a_link(genuine, tmp_path: Path) -> None:
    """A link planted among the runs cannot point resume=true at a folder elsewhere."""
    runs = tmp_path / "outputs" / "train" / "runs"
    runs.mkdir(parents=True)
    (runs / "planted").symlink_to(genuine)
    cfg = compose_train([*RUN, "resume=true", f"paths.log_dir={tmp_path / 'outputs'}"], tmp_path)
    assert resolve_ckpt_path(cfg) is None  # nothing to resume: starts fresh


@pytest.fixture
def folder_data(tmp_path: Path):
    """A data=folder module over two empty folders (nothing is read until a split is used)."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    overrides = [f"data.images={tmp_path / 'images'}", f"data.masks={tmp_path / 'masks'}"]
    cfg = compose_train(["data=folder", *overrides], tmp_path / "run")
    return instantiate_or_explain(cfg.data, "data")


def test_a_stored_split_names_samples_never_paths(folder_data, tmp_path, caplog) -> None:
    """The split a checkpoint stores (restored by resume and eval) keeps plain stems only;
    '../x' or '/etc/passwd' are dropped with one warning, never opened."""
    state = {"splits": {"train": ["cat_1", "../../etc/passwd", "/etc/hostname"],
                        "val": ["dog_2"], "test": ["a/b", "cat_3", ".."]}}  # fmt: skip
    with caplog.at_level(logging.WARNING):
        folder_data.load_state_dict(state)
    assert folder_data.splits() == {"train": ["cat_1"], "val": ["dog_2"], "test": ["cat_3"]}
    (warning,) = [r.getMessage() for r in caplog.records if "not file stems" in r.getMessage()]
    assert "'../../etc/passwd'" in warning and "dropped 4 sample name(s)" in warning
    with pytest.raises(DataError, match=r"sample name '\.\./x' is not a file stem"):
        folder_data.source.files("../x")


def test_eval_takes_no_file_a_stored_data_config_names(tmp_path: Path, caplog) -> None:
    """segpets.eval rebuilds the checkpoint's data config but not the groups file, split
    files, cache folder or download it names: this machine's cache, none of the others."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    cfg = compose_train(["data=folder", f"data.images={images}", f"data.masks={masks}"], tmp_path)
    stored = OmegaConf.to_container(cfg, resolve=True)
    stored["data"].update(
        groups="/home/victim/.ssh/id_rsa",
        cache=True,
        cache_dir="/home/victim/.ssh",
        splits={"train": "/etc/passwd", "val": None, "test": "/etc/hosts"},
    )
    saved = OmegaConf.create(stored)
    eval_cfg = compose_config("eval", [f"ckpt_path={tmp_path / 'x.ckpt'}"])
    with caplog.at_level(logging.WARNING):
        data = segpets.eval._eval_data(eval_cfg, saved)
    assert data.groups is None
    assert set(data.splits.values()) == {None}
    assert not str(data.cache_dir).startswith("/home/victim")
    assert Path(data.cache_dir).is_relative_to(Path(os.environ["SEGPETS_CACHE_DIR"]))
    (warning,) = [r.getMessage() for r in caplog.records if "not followed" in r.getMessage()]
    assert "id_rsa" in warning and "/etc/passwd" in warning


def test_eval_of_an_oxford_checkpoint_never_downloads_where_it_says(tmp_path: Path) -> None:
    cfg = compose_train(
        [f"data.root={tmp_path / 'oxford-iiit-pet'}", "data.download=true"], tmp_path
    )
    saved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    eval_cfg = compose_config("eval", [f"ckpt_path={tmp_path / 'x.ckpt'}"])
    assert segpets.eval._eval_data(eval_cfg, saved).download is False
