"""A net of your own for segpets: any ``nn.Module`` mapping normalised (N, 3, H, W) float
images to (N, 1, H, W) logits. This one is a two-level UNet small enough to train on a CPU
in seconds; segpets needs nothing else from it.

Optional attributes segpets reads when present:

* ``min_input_size`` (class attribute, px): segpets refuses a smaller ``data.image_size``
  in one line before anything runs;
* ``input_mean`` / ``input_std`` (3 floats each, 0-1 units, RGB): the statistics your
  pretrained weights expect; with ``data.mean/std: null`` segpets normalises with them
  (else 0.5/0.5).
"""

from __future__ import annotations

import torch
from torch import nn


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """3×3 conv → batch norm → ReLU, twice: (N, c_in, H, W) → (N, c_out, H, W)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class TinyUNet(nn.Module):
    """Two-level UNet: (N, 3, H, W) → (N, 1, H, W) logits, H and W even.

    Args:
        width: channels of the first level (the second has twice as many).
    """

    min_input_size = 2  # one 2×2 max-pool

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"model.width must be positive, got {width}")
        self.enc = conv_block(3, width)
        self.pool = nn.MaxPool2d(2)
        self.bottom = conv_block(width, 2 * width)
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec = conv_block(2 * width, width)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.enc(x)  # (N, w, H, W)
        deep = self.up(self.bottom(self.pool(skip)))  # (N, w, H, W)
        return self.head(self.dec(torch.cat([skip, deep], dim=1)))  # (N, 1, H, W)
