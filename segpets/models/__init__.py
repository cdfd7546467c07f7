"""Segmentation networks: plain ``nn.Module``s, (N, 3, H, W) images → (N, 1, H, W) logits.

``SmpNet`` wraps segmentation_models_pytorch (optional: ``pip install 'segpets[zoo]'``), which
is imported only when one is built.
"""

from segpets.models.resnet_unet import ResNet34UNet
from segpets.models.smp import SmpNet
from segpets.models.unet import UNet

__all__ = ["UNet", "ResNet34UNet", "SmpNet"]
