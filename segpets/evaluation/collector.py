"""A Lightning callback that collects per-image results while ``trainer.test``/``validate``
runs the module's own loop, so the report's headline numbers are the module's, unchanged."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torchmetrics.functional.classification import binary_f1_score

from segpets.data.dataset import SampleSource
from segpets.evaluation.logits import resize_logits
from segpets.evaluation.report import captioned_panel
from segpets.labels import IGNORE_INDEX
from segpets.metrics import PerImageBoundaryF1, binarize, segmentation_metrics


def per_image_dice(preds: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """(N,) Dice of binary (N, 1, H, W) masks, as ``PerImageDice`` (empty/empty = 1; truth
    pixels equal to ``IGNORE_INDEX`` left out)."""
    dice = binary_f1_score(
        preds,
        truth,
        multidim_average="samplewise",
        zero_division=1.0,
        ignore_index=IGNORE_INDEX,
        validate_args=False,
    )
    return dice.reshape(-1)  # torchmetrics squeezes N = 1 to a scalar


class EvalCollector(L.Callback):
    """Per image: Dice, IoU, boundary F1 (and, with ``full_res``, the same at the image's
    original size against its original trimap); keeps the ``worst_k`` images by Dice.

    Logs ``{split}/boundary_f1`` and ``{split}/full_res/*`` at epoch end, so they come back
    from ``trainer.test`` beside the module's metrics. Single-process only (eval runs on one
    device): the per-image lists are not gathered across ranks.
    """

    def __init__(
        self,
        split: str,
        source: SampleSource,
        boundary_tolerance: int = 2,
        full_res: bool = False,
        worst_k: int = 16,
    ) -> None:
        self.split, self.source, self.full_res, self.worst_k = split, source, full_res, worst_k
        self.boundary = PerImageBoundaryF1(boundary_tolerance)
        self.full_metrics = segmentation_metrics(f"{split}/full_res/")
        for metric in self.full_metrics.values():  # inputs are binarised here; torchmetrics'
            metric.validate_args = False  # check (a torch.unique per update) dominated run time
        self.full_boundary = PerImageBoundaryF1(boundary_tolerance)
        self.records: list[dict[str, Any]] = []
        self.worst: list[dict[str, Any]] = []  # ≤ worst_k entries, lowest Dice first

    # --- Lightning hooks ----------------------------------------------------------------
    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        self._collect(outputs, batch)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        self._collect(outputs, batch)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule):
        self._log(pl_module)

    # --- collection ---------------------------------------------------------------------
    @torch.no_grad()
    def _collect(self, logits: torch.Tensor, batch: dict) -> None:
        logits = logits.detach().float().cpu()  # (N, 1, h, w)
        preds, truth = binarize(logits), batch["mask"].detach().cpu().long()
        dice = per_image_dice(preds, truth)
        bf1 = self._update(self.boundary, preds, truth)
        for i, name in enumerate(batch["name"]):
            rec = {"name": name, "dice": float(dice[i]), "iou": float(dice[i] / (2 - dice[i]))}
            rec["empty_truth"] = not bool((truth[i] == 1).any())  # no pet in the ground truth
            rec["boundary_f1"] = float(bf1[i])
            if self.full_res:
                rec.update(self._score_full_res(logits[i : i + 1], name))
            self.records.append(rec)
        self._keep_worst(dice, batch, logits)

    @staticmethod
    def _update(metric: PerImageBoundaryF1, preds: torch.Tensor, truth: torch.Tensor):
        metric.update(preds, truth)
        return metric.scores[-1]

    def _score_full_res(self, logits: torch.Tensor, name: str) -> dict[str, float]:
        """Logits resized to the original H×W, scored against the original mask."""
        mask = torch.from_numpy(self.source.load_mask(name)).long()[None, None]
        preds = binarize(resize_logits(logits, tuple(mask.shape[-2:])))  # (1, 1, H, W)
        self.full_metrics.update(preds, mask)
        dice = per_image_dice(preds, mask)
        bf1 = self._update(self.full_boundary, preds, mask)
        return {"dice_full_res": float(dice[0]), "boundary_f1_full_res": float(bf1[0])}

    def _keep_worst(self, dice, batch, logits) -> None:
        """Keep the eval-size logits of the ``worst_k`` lowest-Dice images; their panels are
        drawn from the original files (:meth:`worst_panels`)."""
        if self.worst_k <= 0:
            return
        for i, name in enumerate(batch["name"]):
            self.worst.append({"name": name, "dice": float(dice[i]), "logits": logits[i : i + 1]})
        self.worst = sorted(self.worst, key=lambda w: (w["dice"], w["name"]))[: self.worst_k]

    # --- results ------------------------------------------------------------------------
    def _log(self, pl_module: L.LightningModule) -> None:
        if not self.records:
            return
        pl_module.log(f"{self.split}/boundary_f1", self.boundary.compute())
        if self.full_res:
            for key, value in self.full_metrics.compute().items():
                pl_module.log(key, value)
            pl_module.log(f"{self.split}/full_res/boundary_f1", self.full_boundary.compute())

    def empty_truth_summary(self) -> dict[str, float | int]:
        """How many images have no pet pixel in their ground truth (their Dice is 1 for an
        empty prediction, 0 for any other) and the per-image Dice of the others."""
        others = [r["dice"] for r in self.records if not r["empty_truth"]]
        return {
            "images_empty_truth": len(self.records) - len(others),
            "dice_without_empty_truth": sum(others) / len(others) if others else float("nan"),
        }

    def worst_panels(
        self, labels: dict[str, dict[str, str]] | None = None
    ) -> list[tuple[str, float, np.ndarray]]:
        """(name, Dice, panel) of the worst images, worst first. Each panel shows the original
        image | its original mask | the prediction (logits resized to the original size) at
        the original resolution (short side at least 256 px), captioned with the name, the
        sample's labels (e.g. breed and species) and its Dice: the eval-size Dice that ranks
        it and, for the prediction drawn, the Dice at the original size."""
        panels = []
        for w in self.worst:
            image, mask = self.source.load_pair(w["name"])  # (H, W, 3), (H, W) uint8
            pred = binarize(resize_logits(w["logits"], mask.shape))[0, 0].bool().numpy()
            full = per_image_dice(
                torch.from_numpy(pred).long()[None, None], torch.from_numpy(mask).long()[None, None]
            )
            labels_text = "".join(f", {v}" for v in (labels or {}).get(w["name"], {}).values())
            caption = (
                f"{w['name']}{labels_text}: Dice {w['dice']:.3f} (original size {full[0]:.3f})"
            )
            panels.append(
                (
                    w["name"],
                    w["dice"],
                    captioned_panel(image, mask == 1, pred, caption, ignored=mask == IGNORE_INDEX),
                )
            )
        return panels
