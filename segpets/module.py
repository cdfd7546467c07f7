"""The LightningModule: loss, metrics, logging and optimisers around any segmentation net."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from segpets.data.transforms import normalize
from segpets.evaluation.ops import hflip_average
from segpets.metrics import binarize, segmentation_metrics

OptimizerFactory = Callable[..., torch.optim.Optimizer]

# Lightning says so on every run that has a DataModule; the module's hook is the one meant
warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer`")


class SegmentationModule(L.LightningModule):
    """Binary segmentation with ``net`` (images → (N, 1, H, W) logits).

    ``optimizer`` is a partial taking the parameters; ``scheduler`` is Lightning's
    lr-scheduler dict whose ``scheduler`` entry is a partial taking the optimizer (or ``None``).
    ``config`` is the run's resolved config as plain data: it is saved in every checkpoint
    (``hyper_parameters["config"]``) so eval/predict rebuild the exact net and preprocessing,
    and it is what TensorBoard's hparams tab shows. ``mean``/``std`` (``data.mean``/``std``)
    normalise the loader's uint8 images once they are on the device
    (:meth:`on_after_batch_transfer`).
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        channels_last: bool = False,
        mean: tuple[float, ...] = (0.5, 0.5, 0.5),
        std: tuple[float, ...] = (0.5, 0.5, 0.5),
    ) -> None:
        super().__init__()
        # buffers, so they follow the module to its device; not saved (they are in config)
        self.register_buffer("input_mean", torch.tensor(mean, dtype=torch.float32), False)
        self.register_buffer("input_std", torch.tensor(std, dtype=torch.float32), False)
        self.save_hyperparameters({"config": config or {}})
        # channels_last (NHWC) weights and inputs: faster convolutions on CPU (oneDNN) and on
        # tensor cores; same results within float tolerance (tests/test_fast_paths.py)
        self.channels_last = channels_last
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net, self.loss = net, loss
        self.optimizer_factory, self.scheduler_config = optimizer, scheduler
        self.test_tta: str | None = None  # "hflip": test with flip TTA (train's test_tta)
        self.val_metrics = segmentation_metrics("val/")
        self.test_metrics = segmentation_metrics("test/")

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) loader images → normalised float (float images unchanged)."""
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
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    def _step(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        if stage == "test" and self.test_tta == "hflip":  # mean probability with the mirror's
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

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if not self.scheduler_config or self.scheduler_config.get("scheduler") is None:
            return optimizer
        scheduler = {**self.scheduler_config}
        scheduler["scheduler"] = scheduler["scheduler"](optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
