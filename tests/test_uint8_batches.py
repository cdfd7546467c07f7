"""Batches travel as uint8 and are normalised on the device: the same numbers as
albumentations' Normalize on the CPU (the path before), for training and evaluation."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from segpets.command.build import build_module
from segpets.data.oxford_pet import OxfordPetSource
from segpets.data.transforms import normalize
from tests.conftest import compose_train


def with_cpu_normalize(pipeline: A.Compose, mean, std) -> A.Compose:
    """``pipeline`` with albumentations' Normalize before its ToTensorV2: the float path."""
    steps = list(pipeline.transforms)
    steps.insert(len(steps) - 1, A.Normalize(mean=mean, std=std))
    return A.Compose(steps)


@pytest.mark.parametrize("split", ["train", "test"])
def test_device_normalisation_equals_cpu_normalize(split, mini_root, tmp_path) -> None:
    overrides = [f"data.root={mini_root}", "data.image_size=96", "data.mean=[0.485,0.456,0.406]"]
    overrides += ["data.std=[0.229,0.224,0.225]", "model.width=4", "data.batch_size=4"]
    cfg = compose_train(overrides, tmp_path)
    dm = instantiate(cfg.data)
    module = build_module(cfg)
    pipeline = dm.train_transform if split == "train" else dm.eval_transform
    float_path = with_cpu_normalize(pipeline, dm.mean, dm.std)
    source = OxfordPetSource(dm.root)
    images, masks, expected = [], [], []
    for seed, name in enumerate(dm.split_names(split)[:4]):
        image, mask = source.load_pair(name)
        for transform, out in ((pipeline, images), (float_path, expected)):
            transform.set_random_seed(seed)  # the same crop/flip/jitter draw on both paths
            result = transform(image=image, mask=mask)
            out.append(result["image"])
        masks.append(torch.as_tensor(result["mask"]).unsqueeze(0))
    batch = {"image": torch.stack(images), "mask": torch.stack(masks)}
    assert batch["image"].dtype == torch.uint8 and batch["mask"].dtype == torch.uint8
    moved = module.on_after_batch_transfer(batch, 0)
    assert moved["image"].dtype == torch.float32 and moved["mask"].dtype == torch.float32
    reference = torch.stack(expected)
    assert torch.allclose(moved["image"], reference, atol=1e-5, rtol=0)
    module.eval()
    with torch.no_grad():
        assert torch.allclose(module(moved["image"]), module(reference), atol=1e-5)
        loss = module.loss(module(moved["image"]), moved["mask"])
        assert loss.item() == pytest.approx(module.loss(module(reference), moved["mask"]).item())


def test_normalize_leaves_float_images_alone() -> None:
    """A pipeline that normalised itself (an older checkpoint's) is not normalised twice."""
    images = torch.randn(2, 3, 8, 8)
    assert normalize(images, (0.5,) * 3, (0.5,) * 3) is images
    raw = torch.tensor(np.array([0, 128, 255], np.uint8)).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    got = normalize(raw.contiguous().view(3, 2, 2), (0.5,) * 3, (0.25,) * 3)
    expected = (torch.tensor([0.0, 128.0, 255.0]) / 255 - 0.5) / 0.25
    assert torch.allclose(got[:, 0, 0], expected, atol=1e-6)
