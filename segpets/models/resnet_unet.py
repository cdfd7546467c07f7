"""The seed lab's ResNet34-UNet: a torchvision ResNet34 encoder with a UNet-style decoder."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet, ResNet34_Weights, resnet34

from segpets.config_types import NumClasses, PositiveInt
from segpets.errors import ConfigError
from segpets.models.blocks import DoubleConv, UpBlock


def build_resnet34(weights: str | None = None) -> ResNet:
    """torchvision's ResNet34, randomly initialised (``None``), with ImageNet weights through
    torchvision's weights API (``"imagenet"``: torch hub cache or download), or from a local
    state-dict file (a path) for machines without internet."""
    if weights is None:
        return resnet34(weights=None)
    if weights == "imagenet":
        try:
            return resnet34(weights=ResNet34_Weights.IMAGENET1K_V1)
        except OSError as err:  # URLError is an OSError: offline and not cached
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            raise ConfigError(
                f"model.encoder_weights=imagenet: could not load ImageNet ResNet34 weights "
                f"({err}); put resnet34-b627a593.pth in {cache} or set "
                f"model.encoder_weights=/path/to/file.pth"
            ) from err
    path = Path(weights).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"model.encoder_weights: no such file '{path}'")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        model = resnet34(weights=None)
        model.load_state_dict(state)
    except Exception as err:  # unpickling refused, wrong keys, wrong shapes, corrupt file
        raise ConfigError(
            f"model.encoder_weights: '{path}' is not a ResNet34 state dict ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]})"
        ) from err
    return model


class ResNet34Encoder(nn.Module):
    """ResNet34 (7×7 stem, layers 3-4-6-3) returning the five feature maps a decoder needs."""

    channels = (64, 64, 128, 256, 512)

    def __init__(self, weights: str | None = None) -> None:
        super().__init__()
        resnet = build_resnet34(weights)
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu)
        self.maxpool = resnet.maxpool
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.stem(x)  # (N, 64, H/2, W/2)
        f2 = self.layer1(self.maxpool(f1))  # (N, 64, H/4, W/4)
        f3 = self.layer2(f2)  # (N, 128, H/8, W/8)
        f4 = self.layer3(f3)  # (N, 256, H/16, W/16)
        f5 = self.layer4(f4)  # (N, 512, H/32, W/32)
        return [f1, f2, f3, f4, f5]


class ResNet34UNet(nn.Module):
    """ResNet34 encoder + decoder of transposed convs and DoubleConvs over the encoder skips.

    The decoder ends at H/2; a last transposed conv brings it to H, and the logits are resized
    to the input's exact H×W, so any input size works. ``input_mean``/``input_std``: the
    ImageNet statistics when ``encoder_weights`` is set (``None`` from scratch).
    """

    def __init__(
        self,
        num_classes: NumClasses = 1,
        encoder_weights: str | None = None,
        decoder_channels: tuple[PositiveInt, PositiveInt, PositiveInt, PositiveInt] = (
            256,
            128,
            64,
            64,
        ),
    ) -> None:
        super().__init__()
        self.encoder = ResNet34Encoder(encoder_weights)
        # the ImageNet statistics torchvision's weights were trained with (from their own
        # transforms), when the encoder starts from them; None from scratch
        preset = ResNet34_Weights.IMAGENET1K_V1.transforms() if encoder_weights else None
        self.input_mean = tuple(preset.mean) if preset else None
        self.input_std = tuple(preset.std) if preset else None
        enc = self.encoder.channels
        in_channels = [enc[-1], *decoder_channels[:-1]]
        skip_channels = enc[-2::-1]  # 256, 128, 64, 64
        self.decoder = nn.ModuleList(
            UpBlock(c_in, c_skip, c_out, batch_norm=True)
            for c_in, c_skip, c_out in zip(
                in_channels, skip_channels, decoder_channels, strict=True
            )
        )
        last = decoder_channels[-1]
        self.final_up = nn.ConvTranspose2d(last, last // 2, kernel_size=2, stride=2)
        self.final_conv = DoubleConv(last // 2, last // 2, batch_norm=True)
        self.head = nn.Conv2d(last // 2, num_classes, kernel_size=1)

    @property
    def backbone(self) -> nn.Module:
        """The ResNet34 encoder: what ``module.encoder_lr``, ``module.freeze_encoder_bn`` and
        Lightning's ``BackboneFinetuning`` act on."""
        return self.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)  # [H/2, H/4, H/8, H/16, H/32]
        x_dec = features[-1]
        for i, block in enumerate(self.decoder):  # skips H/16 … H/2 → (N, 64, H/2, W/2)
            x_dec = block(x_dec, features[-2 - i])
        x_dec = self.final_conv(self.final_up(x_dec))  # (N, 32, ~H, ~W)
        logits = self.head(x_dec)
        # always resized (an identity at equal sizes): a branch on sizes would be baked in by
        # ONNX/TorchScript export and break dynamic H×W
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
