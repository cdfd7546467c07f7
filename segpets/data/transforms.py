"""The albumentations pipelines a config builds: checks on them, and the normalisation that
follows them on the device."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import albumentations as A
import cv2
import torch

log = logging.getLogger(__name__)

# albumentations steps that resize the mask with cv2.resize (warps such as Affine sample at
# pixel centres already, whatever the flag)
RESIZING_STEPS = (
    A.Resize,
    A.RandomResizedCrop,
    A.RandomSizedCrop,
    A.LongestMaxSize,
    A.SmallestMaxSize,
    A.RandomScale,
)


def misaligned_mask_resizes(pipeline: object) -> list[str]:
    """Names of the steps of an albumentations ``Compose`` that resize masks with cv2's plain
    ``INTER_NEAREST``: it takes each output cell's top-left source pixel, while the image's
    linear/area resampling is centre-aligned, so the mask lands ~0.5 output px right of and
    below its image. ``INTER_NEAREST_EXACT`` (6) is centre-aligned."""
    return [
        type(step).__name__
        for step in getattr(pipeline, "transforms", [])
        if isinstance(step, RESIZING_STEPS)
        and int(getattr(step, "mask_interpolation", -1)) == cv2.INTER_NEAREST
    ]


def warn_misaligned_mask_resizes(pipeline: object, key: str) -> None:
    """Log a warning naming the config key of every step :func:`misaligned_mask_resizes` finds."""
    for name in misaligned_mask_resizes(pipeline):
        log.warning(
            "%s: %s resizes masks with cv2.INTER_NEAREST (mask_interpolation: 0), which puts "
            "each mask ~0.5 px right of and below its image; set mask_interpolation: 6 "
            "(cv2.INTER_NEAREST_EXACT, centre-aligned) as configs/data/oxford_pet.yaml does",
            key,
            name,
        )


def normalize(
    images: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """Model input from loader images: uint8 (..., 3, H, W) in 0-255 → float32
    (x − 255·mean) / (255·std) per channel, albumentations' ``Normalize(mean, std,
    max_pixel_value=255)``; float images (a pipeline that normalised them itself, e.g. an older
    checkpoint's) come back unchanged. ``mean``/``std``: 3 values each, in 0-1 units."""
    if images.dtype != torch.uint8:
        return images
    mean = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(-1, 1, 1)
    return (images.float() - mean * 255) / (std * 255)
