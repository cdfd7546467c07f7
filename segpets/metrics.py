"""Segmentation metrics, each with one exact definition (torchmetrics does the counting).

All of them score the hard mask ``sigmoid(logits) > 0.5``, i.e. ``logits > 0``; the
predictions are binarised here, before torchmetrics sees them, so no metric can apply a
second sigmoid to probabilities (the seed's evaluate() bug) or guess whether its input is
logits or probabilities.

==================  ===================================================================
``dice``            per-image Dice 2|P∩T| / (|P|+|T|), averaged over images (the headline;
                    the seed's definition). An image with empty T and empty P scores 1.
``iou``             per-image IoU |P∩T| / |P∪T|, averaged over images (empty/empty = 1).
``dice_dataset``    dataset-level (micro) Dice: all pixels of all images pooled.
``iou_dataset``     dataset-level (micro) IoU.
``pixel_accuracy``  fraction of all pixels classified correctly (flattered by background).
==================  ===================================================================
"""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryF1Score,
    BinaryJaccardIndex,
)


class PerImageDice(BinaryF1Score):
    """Mean over images of each image's Dice (= F1 of its pixels); empty/empty counts as 1."""

    def __init__(self, **kwargs) -> None:
        super().__init__(multidim_average="samplewise", zero_division=1.0, **kwargs)

    def per_image(self) -> torch.Tensor:
        """(num_images,) Dice of every image seen since the last reset."""
        return super().compute()

    def compute(self) -> torch.Tensor:
        return self.per_image().mean()


class PerImageIoU(PerImageDice):
    """Mean over images of each image's IoU, from its Dice D as IoU = D / (2 − D)."""

    def compute(self) -> torch.Tensor:
        dice = self.per_image()
        return (dice / (2 - dice)).mean()


def binarize(logits: torch.Tensor) -> torch.Tensor:
    """Hard prediction of ``sigmoid(logits) > 0.5`` as an integer tensor."""
    return (logits > 0).long()


def segmentation_metrics(prefix: str) -> MetricCollection:
    """The metric set logged as ``{prefix}dice``, ``{prefix}dice_dataset``, …; update it with
    ``(binarize(logits), target.long())``, both (N, 1, H, W)."""
    return MetricCollection(
        {
            "dice": PerImageDice(),
            "iou": PerImageIoU(),
            "dice_dataset": BinaryF1Score(multidim_average="global", zero_division=1.0),
            "iou_dataset": BinaryJaccardIndex(zero_division=1.0),
            "pixel_accuracy": BinaryAccuracy(multidim_average="global"),
        },
        prefix=prefix,
    )
