"""Freeze the net's pretrained encoder for the first epochs: Lightning's ``BackboneFinetuning``
(``lightning.pytorch.callbacks``) on the module's ``backbone``, with its BatchNorm layers
frozen along with it.

Lightning's ``BackboneFinetuning`` freezes the backbone with ``train_bn=True`` whatever its
``train_bn`` argument (which only says whether the BatchNorm weights join the optimizer when it
unfreezes): a "frozen" encoder's BatchNorm layers keep training, in the decoder's parameter
group and at its lr, and keep updating their running statistics. Here ``freeze_bn=True`` (the
default) freezes them with the rest: their weights out of the optimizer and eval mode (they
normalise with their pretrained running statistics and keep them) until the unfreeze epoch.
From then on every encoder layer, BatchNorm included, trains in the encoder's group (its
statistics stay frozen with ``module.freeze_encoder_bn=true``). ``freeze_bn=False`` is
Lightning's behaviour.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
from lightning.pytorch.callbacks import BackboneFinetuning as LightningBackboneFinetuning
from lightning.pytorch.callbacks.finetuning import multiplicative
from torch.nn.modules.batchnorm import _BatchNorm


class BackboneFinetuning(LightningBackboneFinetuning):
    """Lightning's ``BackboneFinetuning`` on ``pl_module.backbone`` (the net's pretrained
    encoder, ``SegmentationModule.backbone``), with ``freeze_bn`` (module docstring) in place
    of ``train_bn``. Other arguments as Lightning's: ``unfreeze_backbone_at_epoch`` (epochs
    frozen), ``lambda_func`` (factor on the encoder's lr each epoch after unfreezing),
    ``backbone_initial_ratio_lr`` / ``backbone_initial_lr`` (its lr when unfrozen: a ratio of
    the decoder's current lr, or a value), ``should_align`` (cap it at the decoder's lr), ...

    While it is present the module builds its optimizer from trainable parameters only, as
    Lightning's callback needs. ``segpets.train`` refuses it for a net without a pretrained
    encoder (Lightning would raise ``MisconfigurationException`` at fit start)."""

    def __init__(
        self,
        unfreeze_backbone_at_epoch: int = 10,
        lambda_func: Callable = multiplicative,
        backbone_initial_ratio_lr: float = 0.1,
        backbone_initial_lr: float | None = None,
        should_align: bool = True,
        initial_denom_lr: float = 10.0,
        freeze_bn: bool = True,
        verbose: bool = False,
        rounding: int = 12,
    ) -> None:
        super().__init__(
            unfreeze_backbone_at_epoch=unfreeze_backbone_at_epoch,
            lambda_func=lambda_func,
            backbone_initial_ratio_lr=backbone_initial_ratio_lr,
            backbone_initial_lr=backbone_initial_lr,
            should_align=should_align,
            initial_denom_lr=initial_denom_lr,
            train_bn=True,  # when unfrozen, the BatchNorm weights join the encoder's group
            verbose=verbose,
            rounding=rounding,
        )
        self.freeze_bn = freeze_bn

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self.freeze(pl_module.backbone, train_bn=not self.freeze_bn)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)  # unfreezes at unfreeze_backbone_at_epoch
        if not self.freeze_bn:
            return
        if trainer.current_epoch < self.unfreeze_backbone_at_epoch:
            for layer in pl_module.backbone.modules():
                if isinstance(layer, _BatchNorm):
                    layer.eval()
        elif trainer.current_epoch == self.unfreeze_backbone_at_epoch:
            pl_module.train()  # training mode again (module.freeze_encoder_bn still applies)
