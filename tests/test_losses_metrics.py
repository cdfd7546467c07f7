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


# --- ignored pixels (mask value 255): in neither the loss nor any metric -------------------
IGN = 255


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_loss_leaves_ignored_pixels_out_by_hand() -> None:
    """One 2×2 image, target [[1, 0], [255, 1]]: BCE is the mean over the 3 valid pixels and
    soft Dice sums over them only; the ignored pixel's logit changes nothing."""
    target = torch.tensor([[[[1.0, 0.0], [IGN, 1.0]]]])
    logits = torch.tensor([[[[2.0, -1.0], [0.5, 3.0]]]])
    bce = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)) + math.log1p(math.exp(-3))) / 3
    p = [sigmoid(2), sigmoid(-1), sigmoid(3)]
    dice = 1 - (2 * (p[0] + p[2]) + 1) / (sum(p) + 2 + 1)
    loss = BCEDiceLoss()
    assert loss(logits, target).item() == pytest.approx(bce + dice, rel=1e-6)
    for value in (-30.0, 0.0, 30.0):
        moved = logits.clone()
        moved[0, 0, 1, 0] = value
        assert loss(moved, target).item() == pytest.approx(bce + dice, rel=1e-6)
    no_ignore = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # 255 → 0 would change it
    assert loss(logits, no_ignore).item() != pytest.approx(bce + dice, rel=1e-3)


def test_metrics_leave_ignored_pixels_out_by_hand() -> None:
    """Target [[1, 1], [255, 0]] vs prediction [[1, 0], [p, 1]]: TP 1, FN 1, FP 1 on the 3 valid
    pixels → Dice 0.5, IoU 1/3, pixel accuracy 1/3, whatever p is."""
    target = torch.tensor([[[[1, 1], [IGN, 0]]]])
    for p in (0, 1):
        metrics = segmentation_metrics("t/")
        metrics.update(torch.tensor([[[[1, 0], [p, 1]]]]), target)
        got = {k: v.item() for k, v in metrics.compute().items()}
        assert got["t/dice"] == pytest.approx(0.5) and got["t/dice_dataset"] == pytest.approx(0.5)
        assert got["t/iou"] == pytest.approx(1 / 3) and got["t/iou_dataset"] == pytest.approx(1 / 3)
        assert got["t/pixel_accuracy"] == pytest.approx(1 / 3)


def test_border_ignore_leaves_trimap_borders_out_of_dice(mini_root, tmp_path) -> None:
    """data.border=ignore on the mini set: a prediction that is right on pet and background
    pixels scores Dice 1 whatever it says on the border; with border=pet it does not."""
    from hydra.utils import instantiate

    from tests.conftest import compose_train

    def val_masks(border: str) -> torch.Tensor:
        cfg = compose_train([f"data.root={mini_root}", f"data.border={border}"], tmp_path)
        dataset = instantiate(cfg.data).dataset("val")
        return torch.stack([dataset[i]["mask"] for i in range(4)]).long()  # (4, 1, 256, 256)

    ignored = val_masks("ignore")
    assert (ignored == IGN).any() and set(ignored.unique().tolist()) == {0, 1, IGN}
    pet = (ignored == 1).long()
    for border_says in (0, 1):  # the border called background, then pet
        pred = torch.where(ignored == IGN, border_says, pet)
        metrics = segmentation_metrics("v/")
        metrics.update(pred, ignored)
        assert metrics.compute()["v/dice"].item() == pytest.approx(1.0)
    seed_targets = val_masks("pet")  # border → pet (the seed)
    assert torch.equal(seed_targets == 1, (ignored == 1) | (ignored == IGN))
    metrics = segmentation_metrics("v/")
    metrics.update(pet, seed_targets)
    assert metrics.compute()["v/dice"].item() < 0.99


def test_boundary_f1_ignores_predictions_on_ignored_pixels() -> None:
    """A 6×6 pet square with a 1-px ignored ring: whatever is predicted on the ring, the
    boundary F1 of a prediction of the square itself stays 1."""
    from segpets.metrics import boundary_f1

    target = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    target[..., 1:7, 1:7] = IGN
    target[..., 2:6, 2:6] = 1
    square = (target == 1).long()
    scores = []
    for ring in (0, 1):
        pred = torch.where(target == IGN, ring, square)
        scores.append(boundary_f1(pred, target, tolerance=0).item())
    assert scores == [1.0, 1.0]


def test_boundary_f1_gives_no_contour_to_a_prediction_without_one() -> None:
    """A disc inside a 4-px ignored ring (a trimap border with data.border=ignore): predicting
    pet everywhere has no contour, so boundary F1 is 0, as without the ring (the old rule,
    ring = not pet in the prediction, drew the true contour into it: 0.5625); the disc itself
    still scores 1."""
    from segpets.metrics import boundary_f1

    yy, xx = torch.meshgrid(torch.arange(40), torch.arange(40), indexing="ij")
    radius = ((yy - 20) ** 2 + (xx - 20) ** 2).float().sqrt()
    target = torch.where(radius < 10, 1, 0)
    target = torch.where((radius >= 10) & (radius < 14), IGN, target)[None, None]
    everything = torch.ones_like(target)
    assert boundary_f1(everything, target, tolerance=2).item() == 0.0
    assert boundary_f1(everything, (radius < 12).long()[None, None], tolerance=2).item() == 0.0
    disc = (radius < 12).long()[None, None]  # a contour anywhere in the ring is right
    assert boundary_f1(disc, target, tolerance=2).item() == 1.0


@pytest.mark.parametrize(
    ("radius", "expected"), [(31, 1.0), (19, 1.0), (25, 1.0), (36, 0.0), (15, 0.0)]
)
def test_boundary_f1_counts_a_contour_in_or_beside_an_ignored_band(radius, expected) -> None:
    """Pet r ≤ 20 inside an ignored band 20 < r ≤ 30: a predicted disc whose edge lies in the
    band or within the 2-px tolerance of either edge is right (as against the band read as pet
    or as background); 5-6 px beyond either edge is not. (Filling alone put the true
    contour mid-band: radius 31 and 19 scored 0.)"""
    from segpets.metrics import boundary_f1

    yy, xx = torch.meshgrid(torch.arange(80), torch.arange(80), indexing="ij")
    r = ((yy - 40) ** 2 + (xx - 40) ** 2).float().sqrt()
    target = torch.where(r <= 20, 1, 0)
    target = torch.where((r > 20) & (r <= 30), IGN, target)[None, None]
    pred = (r <= radius).long()[None, None]
    assert boundary_f1(pred, target, tolerance=2).item() == pytest.approx(expected, abs=0.02)
