"""data=folder: your own images and masks paired by stem, label semantics from the config,
seeded splits, and the same checks and messages as Oxford-IIIT Pet."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import segpets.train
from segpets.command.build import instantiate_or_explain
from segpets.data.files import read_split
from segpets.data.folder import FolderDataModule
from segpets.data.oxford_pet import image_path, load_trimap, trimap_path
from segpets.errors import ConfigError, DataError
from segpets.labels import IGNORE_INDEX
from tests.conftest import assert_one_line_error, cli, compose_train
from tests.test_bad_inputs import BASE

COUNT = 30  # mini-set samples copied into each folder dataset


def make_folder(mini_root: Path, out: Path, labels: bool = False, count: int = COUNT) -> Path:
    """``out/images/*.jpg`` and ``out/masks/*.png`` from the mini set. Binary masks 0/255, or
    with ``labels`` label maps as an annotation tool writes them: palette PNGs whose index is
    the label (0 background, 1 cat, 2 dog, 255 the trimap's border: to be ignored)."""
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    names = read_split(mini_root / "annotations" / "trainval.txt")  # cats first, then dogs
    for name in names[: count // 2] + names[-(count - count // 2) :]:
        shutil.copy(image_path(mini_root, name), out / "images" / f"{name}.jpg")
        trimap = load_trimap(trimap_path(mini_root, name))
        if labels:
            mask = np.where(trimap == 2, 0, 1 if name[0].isupper() else 2).astype(np.uint8)
            mask[trimap == 3] = 255
            img = Image.fromarray(mask, mode="L").convert("P")
            img.putpalette([0, 0, 0, 200, 50, 50, 50, 50, 200] + [255] * (253 * 3))
            img.save(out / "masks" / f"{name}.png")
        else:
            Image.fromarray(np.where(trimap == 2, 0, 255).astype(np.uint8)).save(
                out / "masks" / f"{name}.png"
            )
    return out


def folder_dm(root: Path, tmp_path: Path, *overrides: str) -> FolderDataModule:
    args = ["data=folder", f"data.images={root / 'images'}", f"data.masks={root / 'masks'}"]
    args += ["data.image_size=64", "data.num_workers=0", *overrides]
    return instantiate_or_explain(compose_train(args, tmp_path).data, "data")


@pytest.fixture
def binary_folder(mini_root: Path, tmp_path: Path) -> Path:
    return make_folder(mini_root, tmp_path / "mine")


def test_pairs_splits_and_samples(binary_folder: Path, tmp_path: Path) -> None:
    dm = folder_dm(binary_folder, tmp_path)
    sizes = {s: len(dm.split_names(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 24, "val": 3, "test": 3}
    every = [n for s in ("train", "val", "test") for n in dm.split_names(s)]
    assert sorted(every) == sorted(p.stem for p in (binary_folder / "images").iterdir())
    again = folder_dm(binary_folder, tmp_path).splits()  # the same seed: the same split
    assert again == dm.splits()
    assert not (tmp_path / "splits").exists()  # nothing written while a run is checked
    dm.setup("validate")  # the run starts
    for split in ("train", "val", "test"):  # written to the run folder, one stem a line
        assert read_split(tmp_path / "splits" / f"{split}.txt") == dm.split_names(split)
    other = folder_dm(binary_folder, tmp_path, "data.split_seed=1").splits()
    assert other["val"] != dm.splits()["val"]
    sample = dm.dataset("val")[0]
    assert sample["image"].shape == (3, 64, 64)
    assert set(sample["mask"].unique().tolist()) <= {0.0, 1.0} and sample["mask"].sum() > 0


def test_split_files_are_used_as_given(binary_folder: Path, tmp_path: Path) -> None:
    stems = sorted(p.stem for p in (binary_folder / "images").iterdir())
    files = {}
    for split, names in (("train", stems[:20]), ("val", stems[20:25]), ("test", stems[25:])):
        files[split] = tmp_path / f"{split}.txt"
        files[split].write_text("\ufeff" + "\r\n".join(names))  # as other tools write them
    dm = folder_dm(binary_folder, tmp_path, *(f"data.splits.{k}={v}" for k, v in files.items()))
    assert dm.split_names("val") == stems[20:25] and len(dm.split_names("test")) == 5


def test_label_maps_with_an_ignore_value(mini_root: Path, tmp_path: Path) -> None:
    """Palette label maps are read by index: 1 and 2 are pets, 255 ignored, 0 background."""
    root = make_folder(mini_root, tmp_path / "labels", labels=True)
    dm = folder_dm(root, tmp_path, "data.ignore=255")
    name = dm.split_names("train")[0]
    mask = dm.source.load_mask(name)
    trimap = load_trimap(trimap_path(mini_root, name))
    assert np.array_equal(mask == 1, trimap == 1)
    assert np.array_equal(mask == IGNORE_INDEX, trimap == 3)
    assert np.array_equal(mask == 0, trimap == 2)
    cats = folder_dm(
        root, tmp_path, "data.ignore=255", "data.foreground=[1]", "data.background=[0,2]"
    )
    is_cat = name[0].isupper()
    assert (cats.source.load_mask(name) == 1).any() == is_cat


def test_values_outside_the_configured_sets_name_the_file(mini_root, tmp_path) -> None:
    root = make_folder(mini_root, tmp_path / "labels", labels=True, count=10)
    dm = folder_dm(
        root, tmp_path, "data.foreground=[1]", "data.ignore=255", "data.bad_samples=fail"
    )
    dogs = [n for n in dm.split_names("train") if not n[0].isupper()]
    assert dogs
    with pytest.raises(
        DataError, match=r"mask '.*\.png' has values \[2\] outside foreground \[1\]"
    ):
        dm.dataset("train")


def test_conflicting_label_values_are_refused(binary_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"share the values \[255\]"):
        folder_dm(binary_folder, tmp_path, "data.foreground=[255]", "data.ignore=255")


def test_a_mapping_that_leaves_no_foreground_is_refused(binary_folder, tmp_path) -> None:
    """0/255 masks with data.ignore=255: every pet pixel is ignored, so training could only
    learn background (and score Dice 0); the pre-scan says so in one error, not a warning."""
    dm = folder_dm(binary_folder, tmp_path, "data.ignore=255")
    with pytest.raises(DataError, match=r"split 'train': none of its \d+ masks has a foreground"):
        dm.dataset("train")


@pytest.mark.parametrize("lonely", ["image", "mask"])
def test_unpaired_files_are_one_line(lonely: str, binary_folder, tmp_path, monkeypatch, capfd):
    if lonely == "image":
        shutil.copy(next((binary_folder / "images").iterdir()), binary_folder / "images" / "x.jpg")
        pattern = r"1 unpaired files in data\.images/data\.masks: '.*x\.jpg' \(no mask 'x\.png'\)"
    else:
        shutil.copy(next((binary_folder / "masks").iterdir()), binary_folder / "masks" / "y.png")
        pattern = r"'.*y\.png' \(a mask without an image\)"
    args = [*BASE, "data=folder", f"data.images={binary_folder / 'images'}"]
    args += [f"data.masks={binary_folder / 'masks'}", "data.batch_size=8"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, pattern)
    dm = folder_dm(binary_folder, tmp_path, "data.bad_samples=skip")
    assert sum(len(dm.split_names(s)) for s in ("train", "val", "test")) == COUNT


def test_mask_of_another_size_is_named(binary_folder: Path, tmp_path: Path) -> None:
    mask = next((binary_folder / "masks").iterdir())
    Image.open(mask).resize((50, 40)).save(mask)
    dm = folder_dm(binary_folder, tmp_path)
    split = next(s for s in ("train", "val", "test") if mask.stem in dm.split_names(s))
    with pytest.raises(DataError, match=r"x\d+, but its mask is 50x40"):
        dm.dataset(split)


def test_missing_folder_names_the_key(tmp_path: Path) -> None:
    dm = folder_dm(tmp_path / "nowhere", tmp_path)
    with pytest.raises(DataError, match=r"data\.images: no such folder"):
        dm.splits()


@pytest.mark.slow
def test_train_eval_predict_with_a_persisted_split(mini_root, tmp_path, monkeypatch, capfd):
    """One epoch on a label-map folder with an ignore value and groups; then, with the run
    folder moved and new pairs added (a fresh random split would differ), eval scores the
    checkpoint's own test split with a per-group table, and predict writes masks."""
    import csv
    import json

    import segpets.eval
    import segpets.predict

    root = make_folder(mini_root, tmp_path / "labels", labels=True)
    groups = tmp_path / "groups.csv"
    stems = sorted(p.stem for p in (root / "images").iterdir())
    groups.write_text(
        "stem,group\n" + "".join(f"{s},{'cat' if s[0].isupper() else 'dog'}\n" for s in stems)
    )
    args = [*BASE, "data=folder", f"data.images={root / 'images'}", f"data.masks={root / 'masks'}"]
    args += ["data.ignore=255", f"data.groups={groups}", "data.batch_size=8", "hydra.run.dir=run"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    test_split = read_split(tmp_path / "run" / "splits" / "test.txt")
    assert len(test_split) == 3
    (tmp_path / "run").rename(tmp_path / "moved")
    ckpt = tmp_path / "moved" / "checkpoints" / "last.ckpt"
    extra = make_folder(mini_root, tmp_path / "more", labels=True, count=40)
    for kind in ("images", "masks"):
        for path in (extra / kind).iterdir():
            if not (root / kind / path.name).exists():
                shutil.copy(path, root / kind / path.name)
    assert len(list((root / "images").iterdir())) > COUNT

    code, err = cli(  # the groups file given again: eval reads no file a checkpoint names
        segpets.eval.main,
        [f"ckpt_path={ckpt}", "hydra.run.dir=ev", "progress_bar=false", f"++data.groups={groups}"],
        tmp_path,
        monkeypatch,
        capfd,
    )
    assert code == 0, err[-3000:]
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert report["images"] == 3
    per_image = list(csv.DictReader((tmp_path / "ev" / "per_image.csv").open()))
    assert sorted(r["name"] for r in per_image) == sorted(test_split)
    per_group = list(csv.DictReader((tmp_path / "ev" / "per_group.csv").open()))
    assert {r["group"] for r in per_group} <= {"cat", "dog"} and sum(
        int(r["images"]) for r in per_group
    ) == 3
    assert read_split(tmp_path / "ev" / "splits" / "test.txt") == test_split
    assert not (tmp_path / "run").exists()  # nothing written back to the old run folder

    args = [f"ckpt_path={ckpt}", "data.root=/elsewhere", "hydra.run.dir=ev2"]
    code, err = cli(segpets.eval.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, r"data\.root does not apply to this checkpoint's data")

    # resuming (one more epoch) trains and tests on the checkpoint's split, too
    args = [a for a in args if not a.startswith(("hydra.run.dir", "ckpt_path"))]
    resume = [
        *BASE,
        "data=folder",
        f"data.images={root / 'images'}",
        f"data.masks={root / 'masks'}",
    ]
    resume += ["data.ignore=255", f"data.groups={groups}", "data.batch_size=8"]
    resume += [f"ckpt_path={ckpt}", "trainer.max_epochs=2", "hydra.run.dir=resumed"]
    code, err = cli(segpets.train.main, resume, tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    assert read_split(tmp_path / "resumed" / "splits" / "test.txt") == test_split

    out = tmp_path / "predicted"
    args = [
        f"ckpt_path={ckpt}",
        f"input={root / 'images' / (test_split[0] + '.jpg')}",
        f"output_dir={out}",
        "progress_bar=false",
    ]
    code, err = cli(segpets.predict.main, args, tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    assert (out / f"{test_split[0]}_mask.png").is_file()
