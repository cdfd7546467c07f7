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
``boundary_f1``     per-image boundary F1 within a few pixels (:func:`boundary_f1`),
                    averaged over images; reported by ``segpets.eval``.
==================  ===================================================================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryF1Score,
    BinaryJaccardIndex,
)
from torchmetrics.utilities import dim_zero_cat

from segpets.labels import IGNORE_INDEX


class PerImageDice(BinaryF1Score):
    """Mean over images of each image's Dice (= F1 of its pixels); empty/empty counts as 1."""

    def __init__(self, **kwargs) -> None:
        super().__init__(multidim_average="samplewise", zero_division=1.0, **kwargs)

    def _update_state(self, *stats: torch.Tensor) -> None:
        """Keep every per-image count 1-D. torchmetrics squeezes a one-image batch's counts
        to 0-D; under DDP a rank holding one 0-D state then runs a different all-gather than
        ranks holding 1-D ones, and validation hangs (a 3-image split on 2 processes)."""
        super()._update_state(*(stat.reshape(-1) for stat in stats))

    def per_image(self) -> torch.Tensor:
        """(num_images,) Dice of every image seen since the last reset."""
        return super().compute().reshape(-1)

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
    ``(binarize(logits), target.long())``, both (N, 1, H, W). Target pixels equal to
    ``IGNORE_INDEX`` (255) count in no metric (torchmetrics' ``ignore_index``)."""
    ignore = {"ignore_index": IGNORE_INDEX}
    return MetricCollection(
        {
            "dice": PerImageDice(**ignore),
            "iou": PerImageIoU(**ignore),
            "dice_dataset": BinaryF1Score(multidim_average="global", zero_division=1.0, **ignore),
            "iou_dataset": BinaryJaccardIndex(zero_division=1.0, **ignore),
            "pixel_accuracy": BinaryAccuracy(multidim_average="global", **ignore),
        },
        prefix=prefix,
    )


def boundary(mask: torch.Tensor) -> torch.Tensor:
    """Contour of a binary (N, 1, H, W) mask: foreground (1) pixels with a background pixel
    among their 8 neighbours. The image frame is not a contour (a pet cut by the border has no
    boundary there): max-pooling pads with -inf, so pixels outside the image never count."""
    foreground = mask == 1
    background = 1.0 - foreground.float()
    return (foreground & (F.max_pool2d(background, 3, stride=1, padding=1) > 0)).float()


def fill_ignored(mask: torch.Tensor, ignored: torch.Tensor) -> torch.Tensor:
    """Binary (N, 1, H, W) ``mask`` with its ``ignored`` pixels (bool, same shape) filled from
    the nearest pixels that are not ignored, ring by ring: each takes the majority of its known
    8-neighbours (ties: foreground). The values under ``ignored`` are never read; a region of
    the image with no known pixel stays 0."""
    value, known = torch.where(ignored, 0.0, (mask == 1).float()), (~ignored).float()
    ones = torch.ones(1, 1, 3, 3, dtype=value.dtype, device=value.device)
    while True:
        count = F.conv2d(known, ones, padding=1)
        new = (known == 0) & (count > 0)
        if not new.any():
            return value
        votes = F.conv2d(value * known, ones, padding=1) / count.clamp(min=1)
        value = torch.where(new, (votes >= 0.5).float(), value)
        known = torch.where(new, 1.0, known)


def boundary_f1(preds: torch.Tensor, target: torch.Tensor, tolerance: int) -> torch.Tensor:
    """(N,) boundary F1 (the BF score of Csurka et al. 2013) of binary (N, 1, H, W) masks.

    Precision: fraction of predicted contour pixels within ``tolerance`` pixels (Chebyshev
    distance) of a true contour pixel; recall: the converse; BF = 2PR / (P + R). Both contours
    empty scores 1, exactly one empty scores 0. Unlike Dice it is not dominated by the
    interior, so it shows blurry or shifted outlines.

    Pixels whose target is ``IGNORE_INDEX`` are a don't-care band: the prediction there is
    filled from its nearest scored pixels (:func:`fill_ignored`), so what is predicted there
    changes nothing, and the score is the best over three readings of the band in the target
    (filled the same way, all pet, all background): a contour anywhere in the band or within
    ``tolerance`` of either of its edges is right, and predicting pet everywhere (no contour)
    still scores 0.
    """
    ignored = target == IGNORE_INDEX
    if not ignored.any():
        return _boundary_f1(preds, target, tolerance)
    preds = fill_ignored(preds, ignored)
    pet = target == 1
    readings = (fill_ignored(target, ignored), (pet | ignored).float(), pet.float())
    return torch.stack([_boundary_f1(preds, t, tolerance) for t in readings]).amax(0)


def _boundary_f1(preds: torch.Tensor, target: torch.Tensor, tolerance: int) -> torch.Tensor:
    pred_b, true_b = boundary(preds), boundary(target)
    size = 2 * tolerance + 1
    near_true = F.max_pool2d(true_b, size, stride=1, padding=tolerance)
    near_pred = F.max_pool2d(pred_b, size, stride=1, padding=tolerance)
    n_pred, n_true = pred_b.sum((1, 2, 3)), true_b.sum((1, 2, 3))
    precision = (pred_b * near_true).sum((1, 2, 3)) / n_pred.clamp(min=1)
    recall = (true_b * near_pred).sum((1, 2, 3)) / n_true.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    return torch.where((n_pred == 0) & (n_true == 0), torch.ones_like(f1), f1)


class PerImageBoundaryF1(Metric):
    """Mean over images of :func:`boundary_f1`; update with ``(binarize(logits), target)``."""

    full_state_update = False

    def __init__(self, tolerance: int = 2, **kwargs) -> None:
        super().__init__(**kwargs)
        if tolerance < 0:
            raise ValueError(f"boundary tolerance must be >= 0 pixels, got {tolerance}")
        self.tolerance = tolerance
        self.add_state("scores", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.scores.append(boundary_f1(preds, target, self.tolerance))

    def per_image(self) -> torch.Tensor:
        """(num_images,) boundary F1 of every image seen since the last reset."""
        return dim_zero_cat(self.scores)

    def compute(self) -> torch.Tensor:
        return self.per_image().mean()
