"""Operations on logits shared by the module, eval and predict: flip TTA and resizing."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from segpets.errors import ConfigError

TTA_CHOICES = (None, "hflip")
LOGIT_EPS = 1e-6  # probabilities are clamped to [eps, 1 - eps] before going back to logits


def hflip_average(forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor):
    """Logits of the mean of the probabilities of ``images`` and of their horizontal flip
    (flipped back); (N, C, H, W) → (N, 1, H, W). Returned as logits so that ``logits > 0``
    still means probability > 0.5 everywhere downstream (loss, metrics, thresholds)."""
    probs = torch.sigmoid(forward(images)) + torch.sigmoid(forward(images.flip(-1))).flip(-1)
    return torch.logit(probs / 2, eps=LOGIT_EPS)


def check_tta(tta: str | None, key: str) -> None:
    if tta not in TTA_CHOICES:
        raise ConfigError(f"{key} must be null or 'hflip', got '{tta}'")


def resize_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 1, h, w) logits → (N, 1, H, W), bilinear (as the image was resized), so a mask at
    the original resolution is ``resize_logits(...) > 0``."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
