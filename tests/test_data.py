"""The data pipeline on the real mini set (../shared) and on the generated set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from segpets.data import PetDataModule, load_mask, load_rgb, read_split
from segpets.data.oxford_pet import image_path, trimap_path
from segpets.errors import DataError
from tests.conftest import compose_train


def datamodule(root: Path, tmp_path: Path, *overrides: str) -> PetDataModule:
    cfg = compose_train([f"data.root={root}", "data.image_size=64", *overrides], tmp_path)
    return instantiate(cfg.data)


def test_split_sizes_follow_split_files(mini_root: Path, tmp_path: Path) -> None:
    dm = datamodule(mini_root, tmp_path)
    dm.setup()
    sizes = {split: len(dm.dataset(split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 180, "val": 20, "test": 198}
    trainval = read_split(mini_root / "annotations" / "trainval.txt")
    assert dm.split_names("val") == trainval[9::10]  # the 10th, 20th, … lines
    every = set().union(*(dm.split_names(s) for s in ("train", "val", "test")))
    assert "Abyssinian_34" not in every and "Abyssinian_82" not in every  # in no split file


def test_list_txt_headers_ignored(mini_root: Path) -> None:
    names = read_split(mini_root / "annotations" / "list.txt")
    assert len(names) == 398
    assert not any(n.startswith("#") for n in names)


def test_macos_resource_forks_ignored(tmp_path: Path) -> None:
    split = tmp_path / "trainval.txt"
    split.write_text("# header\n._Abyssinian_1 1 1 1\nAbyssinian_1 1 1 1\n\n")
    assert read_split(split) == ["Abyssinian_1"]


@pytest.mark.parametrize("name", ["Abyssinian_5", "Abyssinian_34", "Abyssinian_1"])
def test_odd_image_files_load_as_rgb(mini_root: Path, name: str) -> None:
    """Abyssinian_5 is an RGBA PNG and Abyssinian_34 a GIF, both named .jpg."""
    image = load_rgb(image_path(mini_root, name))
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def test_masks_are_binary_and_follow_trimap(mini_root: Path, tmp_path: Path) -> None:
    trimap = np.asarray(__import__("PIL.Image").Image.open(trimap_path(mini_root, "Abyssinian_5")))
    mask = load_mask(trimap_path(mini_root, "Abyssinian_5"))
    assert set(np.unique(mask)) <= {0, 1}
    assert np.array_equal(mask == 1, (trimap == 1) | (trimap == 3))
    dm = datamodule(mini_root, tmp_path)
    sample = dm.dataset("test")[0]
    assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.uint8
    assert sample["mask"].shape == (1, 64, 64) and sample["mask"].dtype == torch.uint8
    assert set(sample["mask"].unique().tolist()) <= {0.0, 1.0}
    batch = next(iter(dm.train_dataloader()))
    assert set(batch["mask"].unique().tolist()) <= {0.0, 1.0}


def test_augmentation_keeps_image_and_mask_aligned(mini_root: Path, tmp_path: Path) -> None:
    """Paint the mask into the image; after the seed's train augmentations (crop, flip,
    rotate, translate, jitter) the bright pixels must still be the mask pixels."""
    dm = datamodule(mini_root, tmp_path, "data.image_size=96")
    mask = load_mask(trimap_path(mini_root, "Abyssinian_1"))
    painted = np.repeat(mask[..., None] * 255, 3, axis=2).astype(np.uint8)
    for seed in range(20):
        np.random.seed(seed)
        __import__("random").seed(seed)
        out = dm.train_transform(image=painted, mask=mask)
        bright = out["image"][0] > 127  # uint8: 255 (jittered), or 0
        agree = (bright == torch.as_tensor(out["mask"]).bool()).float().mean().item()
        assert agree > 0.98, f"seed {seed}: only {agree:.3f} of pixels agree"


def test_eval_shrinking_is_antialiased(tmp_path: Path) -> None:
    """Photos are shrunk ~4-8x to 64-128 px: cv2's plain linear resize samples only 2x2 source
    pixels per output pixel and aliases, which cost the cpu_fast recipe ~0.015 test Dice
    (docs/history.md). Area resampling averages the whole footprint: at ~8x, per-pixel
    noise keeps ~1/8 of its std (plain linear keeps ~1/2)."""
    cfg = compose_train(["data.image_size=64"], tmp_path)
    resize = instantiate(cfg.data.eval_transform).transforms[0]
    noise = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    out = resize(image=noise, mask=np.zeros((512, 512), np.uint8))["image"]
    assert out.shape[:2] == (64, 64)
    assert out.std() < 0.25 * noise.std()


def test_missing_root_is_one_clear_error(tmp_path: Path) -> None:
    dm = datamodule(tmp_path / "nowhere", tmp_path)
    with pytest.raises(DataError, match="data.root"):
        dm.prepare_data()


def test_missing_files_are_all_named(mini_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "pets"
    (root / "annotations" / "trimaps").mkdir(parents=True)
    (root / "images").mkdir()
    (root / "annotations" / "trainval.txt").write_text("cat_1 1 1 1\ncat_2 1 1 1\n")
    dm = datamodule(root, tmp_path)
    with pytest.raises(DataError, match=r"4 of its files .* missing: .*cat_1\.jpg"):
        dm.setup("fit")


def test_generated_dataset_uses_official_layout(tmp_path: Path) -> None:
    cfg = compose_train(["data=synthetic"], tmp_path)
    dm = instantiate(cfg.data)
    dm.prepare_data()
    assert dm.root.is_relative_to(Path(__import__("os").environ["SEGPETS_CACHE_DIR"]))
    assert len(dm.dataset("train")) == 180 and len(dm.dataset("val")) == 20
    sample = dm.dataset("test")[0]
    assert sample["mask"].sum() > 0 and sample["image"].shape == (3, 64, 64)
