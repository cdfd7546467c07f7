"""Architectures: output shapes, the seed's parameter count, weight loading, overfitting."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from hydra.utils import instantiate

from segpets.command.build import build_module
from segpets.data.transforms import normalize
from segpets.errors import ConfigError
from segpets.losses import BCEDiceLoss
from segpets.metrics import segmentation_metrics
from segpets.models import ResNet34UNet, UNet
from segpets.models import resnet_unet as resnet_unet_module
from tests.conftest import compose_train

SIZES = [(256, 256), (250, 250), (97, 131)]


@pytest.fixture(scope="module")
def res34() -> ResNet34UNet:
    return ResNet34UNet().eval()


@pytest.mark.parametrize("size", SIZES)
def test_unet_logits_match_input_size(size: tuple[int, int]) -> None:
    with torch.no_grad():
        out = UNet(width=4).eval()(torch.randn(2, 3, *size))
    assert out.shape == (2, 1, *size)


@pytest.mark.parametrize("size", SIZES)
def test_res34_unet_logits_match_input_size(res34: ResNet34UNet, size: tuple[int, int]) -> None:
    with torch.no_grad():
        out = res34(torch.randn(1, 3, *size))
    assert out.shape == (1, 1, *size)


def test_unet_width_64_is_the_seed_architecture() -> None:
    assert sum(p.numel() for p in UNet(width=64).parameters()) == 31_031_745


def test_models_build_from_their_configs(tmp_path: Path) -> None:
    unet = build_module(compose_train(["model=unet", "model.width=16"], tmp_path)).net
    assert isinstance(unet, UNet) and unet.stem[0].out_channels == 16
    res = build_module(compose_train(["model=res34_unet"], tmp_path)).net
    assert isinstance(res, ResNet34UNet)


def test_res34_loads_encoder_weights_from_a_local_file(tmp_path: Path) -> None:
    source = resnet_unet_module.resnet34(weights=None)
    path = tmp_path / "resnet34.pth"
    torch.save(source.state_dict(), path)
    model = ResNet34UNet(encoder_weights=str(path))
    assert torch.equal(model.encoder.layer4[2].conv2.weight, source.layer4[2].conv2.weight)
    assert torch.equal(model.encoder.stem[0].weight, source.conv1.weight)


def test_res34_rejects_bad_weight_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        ResNet34UNet(encoder_weights=str(tmp_path / "missing.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ConfigError, match="not a ResNet34 state dict"):
        ResNet34UNet(encoder_weights=str(wrong))


def test_res34_imagenet_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(
        resnet_unet_module.ResNet34_Weights.IMAGENET1K_V1, "get_state_dict", offline
    )
    with pytest.raises(ConfigError, match="encoder_weights=imagenet"):
        ResNet34UNet(encoder_weights="imagenet")


@pytest.mark.slow
def test_tiny_unet_overfits_one_real_batch(mini_root: Path, tmp_path: Path) -> None:
    """The whole training signal path works: loss falls and Dice passes 0.9 on one batch."""
    cfg = compose_train(
        [f"data.root={mini_root}", "data.image_size=64", "data.batch_size=4"], tmp_path
    )
    dm = instantiate(cfg.data)
    ds = dm.dataset("val")
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    batch = {
        "image": normalize(batch["image"], [0.5] * 3, [0.5] * 3),
        "mask": batch["mask"].float(),
    }
    torch.manual_seed(0)
    model = UNet(width=8, batch_norm=True)
    loss_fn = BCEDiceLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = loss_fn(model(batch["image"]), batch["mask"])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    metrics = segmentation_metrics("")
    model.eval()
    with torch.no_grad():
        metrics.update((model(batch["image"]) > 0).long(), batch["mask"].long())
    assert losses[-1] < 0.3 * losses[0]
    assert metrics.compute()["dice"].item() > 0.9
