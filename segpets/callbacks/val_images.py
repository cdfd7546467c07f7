"""A fixed panel of validation images with ground-truth and prediction overlays, logged to
TensorBoard after every validation epoch, so one can watch the masks sharpen (or not)."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid

from segpets.config_types import NonNegativeInt
from segpets.evaluation.overlays import ALPHA, draw_mask, draw_outcomes
from segpets.labels import IGNORE_INDEX, PET
from segpets.metrics import binarize


def panel(
    images: torch.Tensor,
    masks: torch.Tensor,
    preds: torch.Tensor,
    alpha: float = ALPHA,
    ignored: torch.Tensor | None = None,
) -> torch.Tensor:
    """A (3, H', W') grid: one row per image of [image | ground truth | prediction], in the
    palette of :mod:`segpets.evaluation.overlays` (truth: pet green, ignored grey; prediction:
    true pet green, false pet red, missed pet blue). ``images`` (N, 3, H, W) float in [0, 1];
    ``masks`` (pet), ``preds`` and ``ignored`` (N, 1, H, W) ∈ {0, 1}."""
    ignored = torch.zeros_like(masks) if ignored is None else ignored
    tiles = []
    for image, mask, pred, skip in zip(
        images, masks.bool(), preds.bool(), ignored.bool(), strict=True
    ):
        tiles += [
            image,
            draw_mask(image, mask[0], skip[0], alpha),
            draw_outcomes(image, mask[0], pred[0], skip[0], alpha),
        ]
    return make_grid(torch.stack(tiles), nrow=3, padding=2, pad_value=1.0)


class ValidationImages(L.Callback):
    """Logs the first ``num_images`` validation images (the same ones every epoch, since the
    validation loader does not shuffle or augment) as ``tag`` to every TensorBoard logger."""

    def __init__(self, num_images: NonNegativeInt = 6, tag: str = "val/predictions") -> None:
        self.num_images, self.tag = num_images, tag

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if trainer.sanity_checking or not loggers:
            return
        loader = trainer.val_dataloaders
        dataset = (loader[0] if isinstance(loader, list) else loader).dataset
        samples = [dataset[i] for i in range(min(self.num_images, len(dataset)))]
        if not samples:
            return
        images = torch.stack([s["image"] for s in samples])  # (N, 3, H, W) uint8 from the loader
        masks = torch.stack([s["mask"] for s in samples])  # (N, 1, H, W) labels
        inputs = pl_module.normalize(images.to(pl_module.device))
        with torch.no_grad():
            dtype = next(pl_module.parameters()).dtype  # fp32, or bf16/fp16 for *-true
            preds = binarize(pl_module(inputs.to(dtype))).cpu()
        images = self._unnormalize(pl_module, images)
        grid = panel(images, masks == PET, preds, ignored=masks == IGNORE_INDEX)
        for lg in loggers:
            lg.experiment.add_image(self.tag, grid, global_step=trainer.global_step)

    @staticmethod
    def _unnormalize(pl_module: L.LightningModule, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images: uint8 / 255, or float ones (a pipeline that normalised them itself)
        back through the module's mean/std."""
        if images.dtype == torch.uint8:
            return images.float() / 255
        mean = pl_module.input_mean.cpu().view(1, 3, 1, 1)
        std = pl_module.input_std.cpu().view(1, 3, 1, 1)
        return (images * std + mean).clamp(0, 1)
