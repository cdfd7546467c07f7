"""The experiment and debug configs say what their comments say (hparams_search=optuna is
run in tests/test_sweeps.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import resnet34

from segpets.command.build import build_module
from tests.conftest import compose_train

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.mark.parametrize(
    ("experiment", "target", "lr", "weight_decay"),
    [
        ("seed_unet", "segpets.models.UNet", 5e-4, 1e-5),
        ("seed_res34", "segpets.models.ResNet34UNet", 1e-4, 3e-5),
    ],
)
def test_seed_experiments_are_the_labs_settings(
    experiment: str, target: str, lr: float, weight_decay: float, tmp_path: Path
) -> None:
    cfg = compose_train([f"experiment={experiment}"], tmp_path)
    assert cfg.task_name == experiment and cfg.model._target_ == target
    assert cfg.optimizer._target_ == "torch.optim.Adam"
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (lr, weight_decay)
    plateau = cfg.scheduler.scheduler
    assert plateau._target_.endswith("ReduceLROnPlateau") and cfg.scheduler.monitor == "val/loss"
    assert (plateau.mode, plateau.patience, plateau.factor) == ("min", 2, 0.5)
    assert cfg.data.image_size == 256
    module = build_module(cfg, with_optimizer=False)  # the lab's Normalize(0.5, 0.5)
    assert module.input_mean.tolist() == module.input_std.tolist() == [0.5] * 3
    assert cfg.model.get("encoder_weights") is None  # the lab trained from scratch
    assert cfg.loss._target_ == "segpets.losses.BCEDiceLoss"
    augment = [t._target_.split(".")[-1] for t in cfg.data.train_transform.transforms]
    assert augment[:4] == ["RandomResizedCrop", "HorizontalFlip", "Affine", "ColorJitter"]


def test_seed_unet_is_the_labs_31m_parameter_unet(tmp_path: Path) -> None:
    module = build_module(compose_train(["experiment=seed_unet"], tmp_path), with_optimizer=False)
    assert sum(p.numel() for p in module.net.parameters()) == 31_031_745
    assert module.input_mean.tolist() == module.input_std.tolist() == [0.5] * 3  # the lab's


def test_imagenet_res34_loads_a_local_encoder_file_with_imagenet_stats(tmp_path: Path) -> None:
    weights = tmp_path / "resnet34.pth"
    torch.manual_seed(0)
    reference = resnet34(weights=None).state_dict()
    torch.save(reference, weights)
    cfg = compose_train(["experiment=imagenet_res34", f"model.encoder_weights={weights}"], tmp_path)
    assert compose_train(["experiment=imagenet_res34"], tmp_path).model.encoder_weights == (
        "imagenet"
    )
    module = build_module(cfg)
    assert module.input_mean.tolist() == pytest.approx(IMAGENET_MEAN)
    assert module.input_std.tolist() == pytest.approx(IMAGENET_STD)
    recorded = module.hparams.config["data"]
    assert (recorded["mean"], recorded["std"]) == (
        pytest.approx(IMAGENET_MEAN),
        pytest.approx(IMAGENET_STD),
    )
    encoder = module.net.encoder
    assert torch.equal(encoder.layer4[2].conv2.weight, reference["layer4.2.conv2.weight"])
    assert torch.equal(encoder.stem[0].weight, reference["conv1.weight"])


def test_debug_configs(tmp_path: Path) -> None:
    overfit = compose_train(["experiment=quickstart", "debug=overfit"], tmp_path)
    assert overfit.trainer.overfit_batches == 3 and overfit.test is False
    assert overfit.data.train_transform == overfit.data.eval_transform  # no augmentation
    profiler = compose_train(["debug=profiler"], tmp_path)
    assert profiler.trainer.profiler._target_.endswith("SimpleProfiler")
    default = compose_train(["debug=default"], tmp_path)
    assert default.trainer.detect_anomaly and default.trainer.max_epochs == 1
