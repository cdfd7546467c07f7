"""The LightningModule: loss, metrics, logging and optimisers around any segmentation net.

Its constructor arguments are the ``module`` node of the train config, one to one, and one
``hydra.utils.instantiate(cfg.module)`` builds it (``segpets/configs/train.yaml``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BaseFinetuning
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from segpets.config_types import RGB, TTA, PositiveRGB
from segpets.data.transforms import normalize
from segpets.evaluation.logits import check_tta, hflip_average
from segpets.metrics import binarize, segmentation_metrics

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SEED_STATS = (0.5, 0.5, 0.5)  # the seed lab's normalisation, for nets without pretrained weights

# Lightning says so on every run that has a DataModule; the module's hook is the one meant
warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer`")


def input_stats(
    net: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std), 3 values each in 0-1 units, that ``net``'s inputs are normalised with: the
    given ones where set, else the net's own (``net.input_mean``/``input_std``: what its
    pretrained weights were trained with, as torchvision's ``Weights.transforms()`` says),
    else the seed's 0.5/0.5. Raises ``ValueError`` for anything but 3 numbers (std > 0)."""
    stats = []
    for name, given in (("mean", mean), ("std", std)):
        value = given if given is not None else getattr(net, f"input_{name}", None) or SEED_STATS
        value = tuple(float(v) for v in value)
        if len(value) != 3 or (name == "std" and min(value) <= 0):
            raise ValueError(f"data.{name} must be 3 numbers (RGB){', > 0' * (name == 'std')}")
        stats.append(value)
    return stats[0], stats[1]


class SegmentationModule(L.LightningModule):
    """Binary segmentation with ``net``: uint8 (N, 3, H, W) images → (N, 1, H, W) logits.

    Args:
        net: any ``nn.Module`` mapping normalised (N, 3, H, W) float images to (N, 1, H, W)
            logits (``segpets.models``, or your own).
        loss: ``loss(logits, target)`` with targets in {0, 1, 255 = ignored}.
        optimizer: a partial taking the parameters (``_partial_: true``); ``None`` for a
            module that only evaluates.
        scheduler: Lightning's lr-scheduler dict whose ``scheduler`` entry is a partial taking
            the optimizer, or ``None``.
        input_mean, input_std: normalisation of the uint8 inputs (0-1 units, RGB); ``None``:
            the net's own, else 0.5/0.5 (:func:`input_stats`).
        channels_last: NHWC weights and inputs (faster convolutions on CPU oneDNN and tensor
            cores; the same results within float tolerance).
        compile: ``torch.compile`` the net in place (state-dict keys, and so checkpoints,
            stay as without).
        test_tta: ``"hflip"``: whenever the module is tested or validated outside ``fit``
            (``trainer.test``/``validate``, ``segpets.eval``), each image's probabilities are
            averaged with its mirror's.
        encoder_lr: the learning rate of the net's pretrained encoder (:attr:`backbone`), an
            optimizer parameter group of its own; the rest (decoder, head) keeps the
            optimizer's ``lr``. ``None``: one group, one ``lr``. A scheduler scales both.
        freeze_encoder_bn: the encoder's BatchNorm layers stay in eval mode while training:
            they normalise with, and keep, the running statistics of the pretrained weights
            (their affine weights still learn, unless the encoder is frozen).
        config: the run's resolved config as plain data, saved in every checkpoint
            (``hyper_parameters["config"]``, with ``data.mean``/``std`` set to the statistics
            used) so eval/predict/export rebuild the exact net and preprocessing.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: dict[str, Any] | None = None,
        input_mean: RGB | None = None,
        input_std: PositiveRGB | None = None,
        channels_last: bool = False,
        compile: bool = False,
        test_tta: TTA = None,
        encoder_lr: float | None = None,
        freeze_encoder_bn: bool = False,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_tta(test_tta, "module.test_tta")
        needs_encoder = {
            "encoder_lr": encoder_lr is not None,
            "freeze_encoder_bn": bool(freeze_encoder_bn),
        }
        for key, wanted in needs_encoder.items():
            if wanted and not isinstance(getattr(net, "backbone", None), nn.Module):
                raise ValueError(
                    f"module.{key} needs a net with a pretrained encoder (net.backbone: model=smp, "
                    f"res34_unet); {type(net).__name__} has none"
                )
        if encoder_lr is not None and not float(encoder_lr) >= 0:
            raise ValueError(f"module.encoder_lr must be a number >= 0 (got {encoder_lr})")
        self.encoder_lr = None if encoder_lr is None else float(encoder_lr)
        self.freeze_encoder_bn = bool(freeze_encoder_bn)
        mean, std = input_stats(net, input_mean, input_std)
        # buffers, so they follow the module to its device; not in the state dict (the config
        # saved with every checkpoint holds them)
        self.register_buffer("input_mean", torch.tensor(mean), persistent=False)
        self.register_buffer("input_std", torch.tensor(std), persistent=False)
        config = dict(config or {})
        if config:
            config["data"] = {**(config.get("data") or {}), "mean": list(mean), "std": list(std)}
        self.save_hyperparameters({"config": config})
        self.channels_last, self.test_tta = channels_last, test_tta
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        if compile:
            net.compile()  # in place: state-dict keys (and so checkpoints) stay as without
        self.net, self.loss = net, loss
        self.optimizer_factory, self.scheduler_config = optimizer, scheduler
        self.val_metrics = segmentation_metrics("val/")
        self.test_metrics = segmentation_metrics("test/")

    @classmethod
    def fit_metrics(cls) -> list[str]:
        """Every metric this module logs while fitting (what a checkpoint, early-stopping or
        plateau-scheduler ``monitor`` can name): the loss per step and epoch, the validation
        loss and :func:`segpets.metrics.segmentation_metrics` of the validation split."""
        train = ["train/loss", "train/loss_step", "train/loss_epoch"]
        return [*train, "val/loss", *segmentation_metrics("val/").keys()]

    @property
    def backbone(self) -> nn.Module:
        """The net's pretrained encoder (``net.backbone``), what Lightning's
        ``BackboneFinetuning`` freezes and unfreezes; ``AttributeError`` for a net without."""
        backbone = getattr(self.net, "backbone", None)
        if not isinstance(backbone, nn.Module):
            raise AttributeError(f"{type(self.net).__name__} has no pretrained encoder (backbone)")
        return backbone

    def train(self, mode: bool = True) -> SegmentationModule:
        """``nn.Module.train``; with ``freeze_encoder_bn`` the encoder's BatchNorm layers stay in
        eval mode (they normalise with their running statistics and do not update them)."""
        super().train(mode)
        if mode and self.freeze_encoder_bn:
            for layer in self.backbone.modules():
                if isinstance(layer, _BatchNorm):
                    layer.eval()
        return self

    def on_train_epoch_start(self) -> None:
        """Lightning trains the module in the mode it finds (and restores after validation the
        modes it captured), so ``freeze_encoder_bn`` is applied here, at every epoch."""
        if self.freeze_encoder_bn:
            self.train()

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) loader images → float (x − 255·mean) / (255·std), albumentations'
        ``Normalize`` formula; float images (an older pipeline normalised them) unchanged."""
        return normalize(images, self.input_mean, self.input_std)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """On the device: images uint8 → normalised float32, masks uint8 → float32 (the loss
        and metrics take 0/1/255 floats), so loader workers, pinned memory and the copy move
        a quarter of the bytes."""
        if isinstance(batch, dict) and "image" in batch:
            batch = {**batch, "image": self.normalize(batch["image"])}
            if "mask" in batch:
                batch["mask"] = batch["mask"].float()
        return batch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised (N, 3, H, W) float → (N, 1, H, W) logits."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    def _augmented(self) -> bool:
        """Test-time augmentation applies when evaluating outside ``fit``."""
        fn = self._trainer.state.fn if self._trainer is not None else None
        return self.test_tta == "hflip" and fn in (TrainerFn.TESTING, TrainerFn.VALIDATING)

    def _step(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        if stage != "train" and self._augmented():  # mean probability with the mirror's
            logits = hflip_average(self, batch["image"])
        else:
            logits = self(batch["image"])
        loss = self.loss(logits, batch["mask"])
        on_step = stage == "train"
        self.log(
            f"{stage}/loss",
            loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(logits),
            sync_dist=not on_step,
        )
        return loss, logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    def _eval_step(self, batch: dict, stage: str, metrics: nn.Module) -> torch.Tensor:
        _, logits = self._step(batch, stage)
        metrics.update(binarize(logits), batch["mask"].long())
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")
        return logits  # (N, 1, H, W): callbacks' on_*_batch_end get it (segpets.eval's report)

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, "val", self.val_metrics)

    def test_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, "test", self.test_metrics)

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups: the rest of the net first, then, with
        ``encoder_lr``, the encoder's with that ``lr``. With a Lightning finetuning callback
        (``BackboneFinetuning``) frozen parameters are left out, as its contract asks (it adds
        the encoder back when it unfreezes it); otherwise every parameter is in (a frozen one
        gets no gradient, so no update), which keeps optimizer states of earlier runs loadable."""
        finetuning = self._trainer is not None and any(
            isinstance(c, BaseFinetuning) for c in self._trainer.callbacks
        )
        trainable = [p for p in self.parameters() if p.requires_grad or not finetuning]
        if self.encoder_lr is None:
            return [{"params": trainable}]
        encoder = {id(p) for p in self.backbone.parameters()}
        groups = [{"params": [p for p in trainable if id(p) not in encoder]}]
        encoder_params = [p for p in trainable if id(p) in encoder]
        if not encoder_params:
            raise ValueError(
                "module.encoder_lr is set but the encoder is frozen when the optimizer is built "
                "(callbacks.backbone_finetuning sets its lr when it unfreezes it: "
                "backbone_initial_lr or backbone_initial_ratio_lr)"
            )
        return [*groups, {"params": encoder_params, "lr": self.encoder_lr}]

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError("this module was built without an optimizer (evaluation only)")
        optimizer = self.optimizer_factory(params=self.param_groups())
        if not self.scheduler_config or self.scheduler_config.get("scheduler") is None:
            return optimizer
        scheduler = {**self.scheduler_config}
        scheduler["scheduler"] = scheduler["scheduler"](optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
