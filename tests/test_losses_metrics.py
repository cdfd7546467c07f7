"""Loss and metrics against values computed by hand on tiny masks."""

from __future__ import annotations

import math

import pytest
import torch

from segpets.losses import BCEDiceLoss, soft_dice_loss
from segpets.metrics import binarize, segmentation_metrics

BIG = 20.0  # a logit whose sigmoid is 1 (or 0, negated) to float precision


def masks() -> tuple[torch.Tensor, torch.Tensor]:
    """Three 4×4 images: partial overlap, empty target with empty prediction, all-foreground
    prediction on a half mask."""
    pred = torch.zeros(3, 1, 4, 4, dtype=torch.long)
    target = torch.zeros(3, 1, 4, 4, dtype=torch.long)
    pred[0, 0, :2] = 1  # 8 predicted pixels
    target[0, 0, :1] = 1  # 4 target pixels, all inside the prediction
    pred[2] = 1  # 16 predicted
    target[2, 0, :, :2] = 1  # 8 target
    return pred, target


def test_metric_definitions_by_hand() -> None:
    pred, target = masks()
    # image 0: TP 4, FP 4, FN 0 → Dice 8/12, IoU 4/8; image 1: empty/empty → 1, 1;
    # image 2: TP 8, FP 8 → Dice 16/24, IoU 8/16
    dice = [8 / 12, 1.0, 16 / 24]
    iou = [0.5, 1.0, 0.5]
    # pooled: TP 12, FP 12, FN 0
    metrics = segmentation_metrics("test/")
    metrics.update(pred, target)
    out = {k: v.item() for k, v in metrics.compute().items()}
    assert out["test/dice"] == pytest.approx(sum(dice) / 3)
    assert out["test/iou"] == pytest.approx(sum(iou) / 3)
    assert out["test/dice_dataset"] == pytest.approx(24 / 36)
    assert out["test/iou_dataset"] == pytest.approx(12 / 24)
    assert out["test/pixel_accuracy"] == pytest.approx((48 - 12) / 48)


def test_metrics_accumulate_per_image_across_batches() -> None:
    pred, target = masks()
    split = segmentation_metrics("val/")
    for i in range(3):
        split.update(pred[i : i + 1], target[i : i + 1])
    whole = segmentation_metrics("val/")
    whole.update(pred, target)
    for key, value in whole.compute().items():
        assert split.compute()[key].item() == pytest.approx(value.item())


def test_binarize_thresholds_probability_half_once() -> None:
    logits = torch.tensor([-3.0, -1e-4, 1e-4, 0.4, 3.0])  # 0.4 is a logit, not a probability
    assert binarize(logits).tolist() == [0, 0, 1, 1, 1]


def test_empty_target_with_prediction_scores_zero() -> None:
    metrics = segmentation_metrics("")
    metrics.update(
        torch.ones(1, 1, 2, 2, dtype=torch.long), torch.zeros(1, 1, 2, 2, dtype=torch.long)
    )
    assert metrics.compute()["dice"].item() == 0.0


def test_soft_dice_loss_by_hand() -> None:
    logits = torch.full((2, 1, 2, 2), -BIG)
    target = torch.zeros(2, 1, 2, 2)
    logits[0, 0, 0] = BIG  # p = [1, 1, 0, 0]
    target[0, 0, :, 0] = 1  # t = [1, 0, 1, 0] → inter 1, Σp 2, Σt 2 → (2+1)/(4+1)
    # image 1: empty prediction on an empty mask → (0+1)/(0+1) = 1
    expected = 1 - (3 / 5 + 1.0) / 2
    assert soft_dice_loss(logits, target).item() == pytest.approx(expected, abs=1e-6)


def test_bce_dice_weights() -> None:
    logits = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    bce = math.log(2)
    dice = 1 - (2 * 0.5 + 1) / (2.0 + 1.0 + 1)
    loss = BCEDiceLoss(bce_weight=0.3, dice_weight=2.0)(logits, target)
    assert loss.item() == pytest.approx(0.3 * bce + 2.0 * dice, abs=1e-6)
