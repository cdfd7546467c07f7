"""Every path a run stores is absolute, so its checkpoints evaluate and resume from any folder;
the run record's ``.hydra/overrides.yaml`` keeps what the user typed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

import segpets.eval
import segpets.train
from tests.conftest import cli, compose_train
from tests.test_bad_inputs import BASE
from tests.test_folder_data import make_folder

# data=folder with every path relative to the folder a run starts in
TYPED = {
    "data.images": "pets/images",
    "data.masks": "pets/masks",
    "data.splits.train": "lists/train.txt",
    "data.splits.val": "lists/val.txt",
    "data.splits.test": "lists/test.txt",
    "data.groups": "lists/groups.csv",
    "paths.cache_dir": "cache",
    "paths.data_dir": "data",
    "paths.log_dir": "logs",
}


def test_relative_paths_become_absolute_in_the_run_config(tmp_path: Path, monkeypatch) -> None:
    from segpets.command.paths import make_paths_absolute

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    typed = {**TYPED, "ckpt_path": "~/runs/last.ckpt"}
    cfg = compose_train(
        ["data=folder", *_args(TYPED), "ckpt_path='~/runs/last.ckpt'"], tmp_path / "o"
    )
    changed = make_paths_absolute(cfg)
    assert changed == typed
    for key, value in TYPED.items():
        assert OmegaConf.select(cfg, key) == str(tmp_path / value), key
    assert cfg.ckpt_path == str(tmp_path / "home" / "runs" / "last.ckpt")
    assert cfg.data.cache_dir == str(tmp_path / "cache" / "arrays")  # follows paths.cache_dir
    assert OmegaConf.to_container(cfg.data)["cache_dir"] == "${paths.cache_dir}/arrays"

    cfg = compose_train(["paths.data_dir=data", "ckpt_path=last"], tmp_path / "o")
    make_paths_absolute(cfg)
    assert cfg.data.root == str(tmp_path / "data" / "oxford-iiit-pet")
    assert cfg.ckpt_path == "last"  # a keyword, not a file
    assert make_paths_absolute(cfg) == {}  # absolute already: nothing changes


@pytest.mark.slow
def test_checkpoint_evaluates_and_resumes_from_another_folder(
    mini_root: Path, tmp_path: Path, monkeypatch, capfd
) -> None:
    """Train in folder A with relative paths (data, split and group files, cache), then
    evaluate and resume from folder B: the checkpoint's paths still mean A's files."""
    a, b = tmp_path / "A", tmp_path / "B"
    b.mkdir()
    make_folder(mini_root, a / "pets", count=12)
    stems = sorted(p.stem for p in (a / "pets" / "images").iterdir())
    (a / "lists").mkdir()
    for split, names in {"train": stems[:8], "val": stems[8:10], "test": stems[10:]}.items():
        (a / "lists" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    (a / "lists" / "groups.csv").write_text("".join(f"{s},{s[0].isupper()}\n" for s in stems))
    run = [*BASE, "data=folder", "data.image_size=32", "data.cache=true"]
    code, err = cli(segpets.train.main, [*run, *_args(TYPED)], a, monkeypatch, capfd)
    assert code == 0, err[-3000:]

    (run_dir,) = (a / "logs" / "train" / "runs").iterdir()
    last = run_dir / "checkpoints" / "last.ckpt"
    stored = OmegaConf.create(torch.load(last, weights_only=True)["hyper_parameters"]["config"])
    for key, value in TYPED.items():
        assert Path(OmegaConf.select(stored, key)) == (a / value).resolve(), key
    assert Path(stored.data.cache_dir) == (a / "cache" / "arrays").resolve()
    assert all(os.path.isabs(v) for v in stored.paths.values())
    typed = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    assert set(_args(TYPED)) <= set(typed)  # the record keeps what the user typed

    args = [f"ckpt_path={last}", "progress_bar=false", "eval.worst_k=0"]
    code, err = cli(segpets.eval.main, args, b, monkeypatch, capfd)
    assert code == 0, err[-3000:]

    from_b = {k: f"../A/{v}" for k, v in TYPED.items()}  # the same files, typed from B
    resume = [*run, *_args(from_b), f"ckpt_path={last}", "trainer.max_epochs=2"]
    code, err = cli(segpets.train.main, resume, b, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    (resumed,) = set((a / "logs" / "train" / "runs").iterdir()) - {run_dir}  # paths.log_dir
    assert torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1


def _args(values: dict[str, str]) -> list[str]:
    return [f"{key}={value}" for key, value in values.items()]
