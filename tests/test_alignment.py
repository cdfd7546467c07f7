"""Masks stay on their images through every resize: the train crop, the eval resize and the
cache, at 64-256 px, flipped or not (an image equal to its own mask must come out equal to its
mask). cv2's plain nearest-neighbour takes each output cell's top-left source pixel while
linear/area resampling is centre-aligned: it put every mask ~0.5 px right of and below its
image (~1 px with the cache, which resizes twice)."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from segpets.data.cache import Resampling
from segpets.data.oxford_pet import TRIMAP_BACKGROUND, TRIMAP_PET
from tests.conftest import compose_train

SIZES = (64, 128, 256)
# Thresholds on the MEAN over many shapes at random sub-pixel positions: one hard mask resized
# to 64 px is quantised to whole pixels (its centroid moves ~0.1 px either way), but a
# systematic offset shows in the mean: 0.5 px with cv2's plain nearest, < 0.03 px when aligned.
MAX_OFFSET_PX = 0.05  # |mean centroid(mask) - centroid(image)| per axis, output pixels
MAX_DISAGREE = 0.005  # mean fraction of pixels where mask and image (> 0.5) disagree


def shapes(count: int = 48, seed: int = 0) -> list[np.ndarray]:
    """(H, W) uint8 {0, 1} masks at odd sizes (500×375, 375×500, 481×333): ellipses, discs and
    rectangles at random (sub-pixel) positions, never touching the border."""
    rng = np.random.default_rng(seed)
    masks = []
    for i in range(count):
        height, width = [(375, 500), (500, 375), (333, 481)][i % 3]
        yy, xx = np.mgrid[:height, :width]
        cy, cx = rng.uniform(0.4, 0.6) * height, rng.uniform(0.4, 0.6) * width
        ry, rx = rng.uniform(0.15, 0.3) * height, rng.uniform(0.15, 0.3) * width
        if i % 2:
            mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        else:
            mask = (abs(xx - cx) < rx) & (abs(yy - cy) < ry)
        masks.append(mask.astype(np.uint8))
    return masks


def centroid(weights: np.ndarray) -> np.ndarray:
    """(x, y) centroid of a non-negative (H, W) map, in pixels (pixel centres at integers)."""
    yy, xx = np.mgrid[: weights.shape[0], : weights.shape[1]]
    total = weights.sum()
    return np.array([(weights * xx).sum() / total, (weights * yy).sum() / total])


def misalignment(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, float]:
    """(|mean centroid offset| per axis in px, mean disagreeing-pixel fraction) of
    (image in [0, 1], mask) pairs."""
    offsets = [centroid(m.astype(float)) - centroid(img) for img, m in pairs]
    disagree = [np.mean((img > 0.5) != m.astype(bool)) for img, m in pairs]
    return np.abs(np.mean(offsets, axis=0)), float(np.mean(disagree))


def geometric(pipeline: A.Compose, flip: bool) -> A.Compose:
    """The steps of ``pipeline`` that move pixels (image and mask alike), the flip forced on or
    off; colour jitter and normalisation change only the image's values."""
    steps = [t for t in pipeline.transforms if isinstance(t, A.DualTransform)]
    steps = [t for t in steps if not isinstance(t, A.HorizontalFlip)]
    return A.Compose([*steps, A.HorizontalFlip(p=1.0 if flip else 0.0)])


def through(transform, masks: list[np.ndarray]) -> list[tuple]:
    """(image in [0, 1], mask) of each mask painted into an image and transformed with it
    (a Compose draws its random parameters from a seed per mask)."""
    pairs = []
    for seed, mask in enumerate(masks):
        if hasattr(transform, "set_random_seed"):
            transform.set_random_seed(seed)
        out = transform(image=np.repeat(mask[..., None] * 255, 3, axis=2), mask=mask)
        pairs.append((out["image"][..., 0] / 255.0, out["mask"]))
    return pairs


def pipelines(size: int, tmp_path: Path) -> tuple[A.Compose, A.Compose]:
    cfg = compose_train([f"data.image_size={size}"], tmp_path)
    return instantiate(cfg.data.train_transform), instantiate(cfg.data.eval_transform)


def assert_aligned(pairs: list[tuple], what: str) -> None:
    offset, disagree = misalignment(pairs)
    print(f"{what}: |mean offset| {offset.round(3)} px, {disagree:.3%} of pixels disagree")
    assert (offset < MAX_OFFSET_PX).all(), f"{what}: mask off its image by {offset} px"
    assert disagree < MAX_DISAGREE, f"{what}: {disagree:.2%} of pixels disagree"


@pytest.mark.parametrize("size", SIZES)
def test_eval_resize_keeps_masks_on_images(size: int, tmp_path: Path) -> None:
    _, eval_tf = pipelines(size, tmp_path)
    assert_aligned(through(eval_tf.transforms[0], shapes()), f"eval {size}px")


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("size", SIZES)
def test_train_augmentation_keeps_masks_on_images(size: int, flip: bool, tmp_path) -> None:
    train_tf, _ = pipelines(size, tmp_path)
    assert_aligned(through(geometric(train_tf, flip), shapes()), f"train {size}px flip={flip}")


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("size", SIZES)
def test_cached_train_path_keeps_masks_on_images(size: int, flip: bool, tmp_path) -> None:
    """data.cache=true resizes twice: once into the cache (as the split's pipeline resizes),
    then the train crop on the cached arrays."""
    train_tf, _ = pipelines(size, tmp_path)
    cached = [through(Resampling.of(train_tf).resize(size), [m])[0][1] for m in shapes()]
    assert_aligned(through(geometric(train_tf, flip), cached), f"cache+train {size}px")


def write_dataset(root: Path) -> Path:
    """The shapes as an official-layout dataset: image = 255 × mask, trimap 1 pet / 2 not."""
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    masks = shapes()
    names = [f"shape_{i}" for i in range(len(masks))]
    for name, mask in zip(names, masks, strict=True):
        painted = Image.fromarray(np.repeat(mask[..., None] * 255, 3, axis=2))
        painted.save(root / "images" / f"{name}.jpg", format="PNG")  # lossless, read by content
        trimap = np.where(mask > 0, TRIMAP_PET, TRIMAP_BACKGROUND).astype(np.uint8)
        Image.fromarray(trimap).save(root / "annotations" / "trimaps" / f"{name}.png")
    lines = "".join(f"{n} 1 1 1\n" for n in names)
    for split in ("trainval.txt", "test.txt"):
        (root / "annotations" / split).write_text(lines)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("cache", [False, True])
@pytest.mark.parametrize("size", [64, 256])
def test_datamodule_samples_keep_masks_on_images(size: int, cache: bool, tmp_path: Path) -> None:
    """End to end through the DataModule (JPEG decode, cache or not, the configured pipelines);
    colour jitter off, since it changes the image's values, not where they are."""
    root = write_dataset(tmp_path / "shapes")
    overrides = [f"data.root={root}", f"data.image_size={size}", f"data.cache={cache}"]
    overrides += [f"data.cache_dir={tmp_path / 'cache'}", "data.val_every=100"]
    overrides += ["data.allow_test_overlap=true"]  # the same shapes in train and test
    dm = instantiate(compose_train(overrides, tmp_path).data)
    for step in dm.train_transform.transforms:
        if isinstance(step, A.ColorJitter):
            step.p = 0.0
    torch.manual_seed(0)  # the train augmentations draw from torch's RNG (TorchSeeded)
    for split in ("train", "test"):
        dataset = dm.dataset(split)
        pairs = []
        for _ in range(2 if split == "train" else 1):
            for sample in (dataset[i] for i in range(len(dataset))):
                image = sample["image"][0].numpy() / 255  # uint8 from the loader
                pairs.append((image, sample["mask"][0].numpy()))
        assert_aligned(pairs, f"{split} {size}px cache={cache}")


def test_a_pipeline_resizing_masks_top_left_is_named(tmp_path: Path, caplog) -> None:
    """A user's pipeline with cv2's plain nearest for masks gets a warning naming the key."""
    overrides = ["data.eval_transform.transforms.0.mask_interpolation=0"]
    with caplog.at_level("WARNING"):
        instantiate(compose_train(overrides, tmp_path).data)
    assert "data.eval_transform: Resize resizes masks with cv2.INTER_NEAREST" in caplog.text
    assert "data.train_transform" not in caplog.text
