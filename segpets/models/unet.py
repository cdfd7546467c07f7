"""The seed lab's UNet (Ronneberger et al. 2015, with padded convs)."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from segpets.config_types import NumClasses, PositiveInt, RGBChannels
from segpets.models.blocks import DoubleConv, UpBlock


class UNet(nn.Module):
    """Five DoubleConv levels (width → 16·width), max-pool down, transposed-conv up, 1×1 head.

    ``width=64`` is the seed architecture (31,031,745 parameters); small widths (8, 16) are for
    tests and CPU runs. Any input H×W of at least ``min_input_size`` works: decoder features
    are padded to their skips.
    """

    min_input_size = 2**4  # four 2×2 max-pools: the bottom level of a 16-px input is 1 px

    def __init__(
        self,
        in_channels: RGBChannels = 3,
        num_classes: NumClasses = 1,
        width: PositiveInt = 64,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"model.width must be positive, got {width}")
        widths = [width * 2**i for i in range(5)]  # 64, 128, 256, 512, 1024
        self.stem = DoubleConv(in_channels, widths[0], batch_norm)
        self.down = nn.ModuleList(
            DoubleConv(c_in, c_out, batch_norm) for c_in, c_out in pairwise(widths)
        )
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(
            UpBlock(c_in, c_out, c_out, batch_norm)
            for c_in, c_out in zip(widths[:0:-1], widths[-2::-1], strict=True)
        )
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]  # (N, w, H, W)
        for block in self.down:  # → (N, 16w, H/16, W/16)
            skips.append(block(self.pool(skips[-1])))
        x = skips.pop()
        for block in self.up:  # → (N, w, H, W)
            x = block(x, skips.pop())
        return self.head(x)  # (N, num_classes, H, W) logits
