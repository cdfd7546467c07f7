"""data.cache: decode + resize once, reuse while the files are unchanged, rebuild when they
change, never write under the dataset root, and leave augmentation per sample."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from segpets.data import PetDataModule, cache, synthetic
from segpets.data.cache import load_or_build
from segpets.data.files import load_rgb
from segpets.data.oxford_pet import OxfordPetSource, image_path, load_pair, trimap_path
from segpets.errors import ConfigError
from tests.conftest import compose_train


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-image generated dataset in the official layout (writable, unlike the mini set)."""
    return synthetic.generate(tmp_path_factory.mktemp("data") / "pets", 20, 4, seed=3)


def datamodule(root: Path, tmp_path: Path, cache: bool) -> PetDataModule:
    cfg = compose_train(
        [f"data.root={root}", "data.image_size=48", f"data.cache={cache}",
         f"data.cache_dir={tmp_path / 'cache'}", "data.val_every=4"],
        tmp_path,
    )  # fmt: skip
    return instantiate(cfg.data)


def test_miss_then_hit_then_rebuild_when_a_file_changes(small_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "pets"
    shutil.copytree(small_root, root)
    dm = datamodule(root, tmp_path, cache=True)
    names = dm.split_names("train")
    entry, hit = load_or_build(tmp_path / "cache", OxfordPetSource(root), "train", names, 48)
    assert not hit and entry.is_relative_to(tmp_path / "cache")
    images = np.load(entry / "images.npy")
    assert images.shape == (len(names), 48, 48, 3) and images.dtype == np.uint8
    built = (entry / "images.npy").stat().st_mtime_ns

    entry2, hit = load_or_build(tmp_path / "cache", OxfordPetSource(root), "train", names, 48)
    assert hit and entry2 == entry and (entry / "images.npy").stat().st_mtime_ns == built

    # another size or split is another entry
    assert not load_or_build(tmp_path / "cache", OxfordPetSource(root), "train", names, 32)[1]

    # change one trimap to all-background: the entry is rebuilt and shows the new mask
    path = trimap_path(root, names[0])
    size = Image.open(path).size
    Image.fromarray(np.full(size[::-1], 2, np.uint8)).save(path)
    os.utime(path, ns=(built + 10**9, built + 10**9))  # a new mtime even on coarse clocks
    entry3, hit = load_or_build(tmp_path / "cache", OxfordPetSource(root), "train", names, 48)
    assert not hit and entry3 == entry
    masks = np.load(entry / "masks.npy")
    assert masks[0].max() == 0 and masks[1].max() == 1
    assert not list(entry.parent.glob("*.tmp-*")) and not list(entry.parent.glob("*.old-*"))


def test_entries_of_another_cache_format_are_rebuilt(
    small_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same files, different pixels (e.g. the resize method changed): not a hit."""
    names = datamodule(small_root, tmp_path, cache=True).split_names("val")
    assert not load_or_build(tmp_path / "cache", OxfordPetSource(small_root), "val", names, 48)[1]
    assert load_or_build(tmp_path / "cache", OxfordPetSource(small_root), "val", names, 48)[1]
    monkeypatch.setattr(cache, "FORMAT", cache.FORMAT + "-next")
    assert not load_or_build(tmp_path / "cache", OxfordPetSource(small_root), "val", names, 48)[1]


def test_cached_eval_samples_equal_uncached(small_root: Path, tmp_path: Path) -> None:
    plain = datamodule(small_root, tmp_path, cache=False).dataset("val")
    cached = datamodule(small_root, tmp_path, cache=True).dataset("val")
    assert len(plain) == len(cached) == 5
    for i in range(len(plain)):
        a, b = plain[i], cached[i]
        assert a["name"] == b["name"]
        assert torch.equal(a["mask"], b["mask"])
        assert torch.equal(a["image"], b["image"])


def test_each_split_is_cached_with_its_own_pipelines_resampling(
    small_root: Path, tmp_path: Path
) -> None:
    """Train shrinks with plain linear (its RandomResizedCrop), val/test with area (their
    Resize), masks of both with centre-aligned nearest: the cached arrays are what each
    pipeline's resize gives, in separate entries (named by all three flags, so entries of
    older code, whose masks sat half a pixel off, are never reused)."""
    dm = datamodule(small_root, tmp_path, cache=True)
    train, val = dm.dataset("train"), dm.dataset("val")
    assert train.entry.name == "train-48px-linear-mask-nearest_exact"
    assert val.entry.name == "val-48px-area-linear-mask-nearest_exact"
    exact = cv2.INTER_NEAREST_EXACT
    for ds, resize in (
        (train, A.Resize(48, 48, mask_interpolation=exact)),
        (val, A.Resize(48, 48, area_for_downscale="image", mask_interpolation=exact)),
    ):
        name = ds.names[0]
        image, mask = load_pair(small_root, name)
        expected = resize(image=image, mask=mask)
        assert np.array_equal(ds.arrays()[0][0], expected["image"])
        assert np.array_equal(ds.arrays()[1][0], expected["mask"])
    assert not np.array_equal(  # the two resamplings differ on these images
        A.Resize(48, 48)(image=load_rgb(image_path(small_root, val.names[0])))["image"],
        val.arrays()[0][0],
    )


def test_augmentations_still_run_per_sample(small_root: Path, tmp_path: Path) -> None:
    train = datamodule(small_root, tmp_path, cache=True).dataset("train")
    draws = [train[0]["image"] for _ in range(6)]
    assert draws[0].shape == (3, 48, 48)
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


def test_cached_loader_with_a_worker(small_root: Path, tmp_path: Path) -> None:
    dm = datamodule(small_root, tmp_path, cache=True)
    dm.num_workers = 1
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape[1:] == (3, 48, 48) and batch["mask"].shape[1:] == (1, 48, 48)


def test_cache_dir_inside_dataset_root_is_refused(small_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cache_dir"):
        load_or_build(
            small_root / "cache", OxfordPetSource(small_root), "val", ["Synthcat_trainval0"], 48
        )


def test_real_mini_set_cache_lives_outside_the_read_only_root(
    mini_root: Path, tmp_path: Path
) -> None:
    dm = datamodule(mini_root, tmp_path, cache=True)
    dm.val_every = 10
    sample = dm.dataset("val")[0]  # 20 real images, the RGBA/GIF pitfalls are in no val split
    assert sample["image"].shape == (3, 48, 48)
    entries = list((tmp_path / "cache").rglob("images.npy"))
    assert len(entries) == 1 and not entries[0].is_relative_to(mini_root.resolve())
