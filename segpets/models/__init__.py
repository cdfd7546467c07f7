"""Segmentation networks: plain ``nn.Module``s, (N, 3, H, W) images → (N, 1, H, W) logits."""

from segpets.models.resnet_unet import ResNet34UNet
from segpets.models.unet import UNet

__all__ = ["UNet", "ResNet34UNet"]
