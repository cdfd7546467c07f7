"""Building blocks shared by the UNet-style decoders."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DoubleConv(nn.Sequential):
    """(3×3 conv → [BN] → ReLU) × 2, padding 1 so H×W is kept.

    The seed's UNet has no normalisation (biased convs), which is what gives it 31,031,745
    parameters at width 64; ``batch_norm=True`` swaps the biases for BatchNorm.
    """

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = False) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers.append(nn.Conv2d(c_in, out_channels, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class UpBlock(nn.Module):
    """2×2 transposed conv (×2 upsampling), concat with the skip, then a DoubleConv."""

    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, batch_norm: bool = False
    ) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(out_channels + skip_channels, out_channels, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)  # (N, out, 2h, 2w)
        x = match_size(x, skip)  # odd input sizes leave the skip one pixel larger
        return self.conv(torch.cat([skip, x], dim=1))


def match_size(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Zero-pad (or crop) ``x`` so its H×W equals ``reference``'s; sizes differ by a few pixels
    when the input is not divisible by the network's total stride."""
    dh = reference.shape[-2] - x.shape[-2]
    dw = reference.shape[-1] - x.shape[-1]
    # no early return when dh == dw == 0 (a zero pad is a no-op): a branch on sizes would be
    # baked in by ONNX/TorchScript export and break dynamic H×W
    return F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])
