"""Training loss: BCE-with-logits + soft Dice, as in the seed lab."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 − mean over images of (2·Σ p·t + s) / (Σ p + Σ t + s), with p = sigmoid(logits).

    Per image, so small pets weigh as much as large ones (matching the per-image Dice metric);
    ``smooth`` keeps empty-mask images finite (an empty prediction there scores 1).
    """
    probs = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1).to(probs.dtype)
    inter = (probs * target).sum(1)
    dice = (2 * inter + smooth) / (probs.sum(1) + target.sum(1) + smooth)
    return 1 - dice.mean()


class BCEDiceLoss(nn.Module):
    """``bce_weight`` · BCE-with-logits + ``dice_weight`` · soft Dice, both on raw logits."""

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0):
        super().__init__()
        self.bce_weight, self.dice_weight, self.smooth = bce_weight, dice_weight, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # keep the loss in fp32 under bf16/16-mixed autocast
        bce = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))
        return self.bce_weight * bce + self.dice_weight * soft_dice_loss(
            logits, target, self.smooth
        )
