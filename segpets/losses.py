"""Training loss: BCE-with-logits + soft Dice, as in the seed lab; pixels whose target is
``IGNORE_INDEX`` (255) count in neither term."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segpets.config_types import NonNegativeFloat
from segpets.labels import IGNORE_INDEX


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    smooth: float = 1.0,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """1 − mean over images of (2·Σ p·t + s) / (Σ p + Σ t + s), with p = sigmoid(logits),
    summed over the ``valid`` pixels only (all when None); (N, 1, H, W) inputs.

    Per image, so small pets weigh as much as large ones (matching the per-image Dice metric);
    ``smooth`` keeps empty-mask images finite (an empty prediction there scores 1).
    """
    probs = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1).to(probs.dtype)
    if valid is not None:
        keep = valid.flatten(1).to(probs.dtype)
        probs, target = probs * keep, target * keep
    inter = (probs * target).sum(1)
    dice = (2 * inter + smooth) / (probs.sum(1) + target.sum(1) + smooth)
    return 1 - dice.mean()


class BCEDiceLoss(nn.Module):
    """``bce_weight`` · BCE-with-logits (mean over valid pixels) + ``dice_weight`` · soft Dice,
    both on raw (N, 1, H, W) logits against targets in {0, 1, 255 = ignored}."""

    def __init__(
        self,
        bce_weight: NonNegativeFloat = 1.0,
        dice_weight: NonNegativeFloat = 1.0,
        smooth: NonNegativeFloat = 1.0,
    ):
        super().__init__()
        self.bce_weight, self.dice_weight, self.smooth = bce_weight, dice_weight, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # keep the loss in fp32 under bf16/16-mixed autocast
        valid = target != IGNORE_INDEX  # no branch on it: no host sync per step on a GPU
        target = torch.where(valid, target, 0).to(logits.dtype)
        weight = valid.to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, target, weight, reduction="sum")
        bce = bce / weight.sum().clamp(min=1)
        dice = soft_dice_loss(logits, target, self.smooth, valid)
        return self.bce_weight * bce + self.dice_weight * dice
