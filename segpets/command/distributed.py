"""What DDP needs from the config and the data before any process starts.

Lightning launches the extra processes inside ``Trainer.fit``/``test``; anything checked here
runs once, in the launching process, so a problem is one line, never one per rank or a hang.
"""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from segpets.errors import DataError

log = logging.getLogger(__name__)


def runs_on_cpu(trainer_cfg: DictConfig) -> bool:
    """Whether ``trainer.accelerator`` resolves to the CPU (``cpu``, or ``auto`` without CUDA)."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def without_cpu_sync_batchnorm(trainer_cfg: DictConfig) -> DictConfig:
    """``trainer_cfg`` with ``sync_batchnorm`` off when it would run on the CPU: torch's
    ``SyncBatchNorm`` only works on GPU modules ("SyncBatchNorm layers only work with GPU
    modules"), so ``trainer=ddp trainer.accelerator=cpu`` with a BatchNorm net would die in its
    first forward pass. Each CPU process then normalises with its own batch statistics."""
    if not trainer_cfg.get("sync_batchnorm") or not runs_on_cpu(trainer_cfg):
        return trainer_cfg
    log.warning(
        "trainer.sync_batchnorm=true needs GPUs (torch's SyncBatchNorm); on the CPU it is off: "
        "each process normalises with its own batch statistics"
    )
    trainer_cfg = OmegaConf.create(OmegaConf.to_container(trainer_cfg, resolve=True))
    with open_dict(trainer_cfg):
        trainer_cfg.sync_batchnorm = False
    return trainer_cfg


def check_eval_shards(datamodule: object, splits: list[str], world_size: int) -> None:
    """Every process needs at least one image of each evaluated split (Lightning's
    ``UnrepeatedDistributedSampler`` asserts it, and a rank without a batch would skip the
    metric all-gathers the others wait in); raises ``DataError`` naming the split."""
    if world_size < 2 or not hasattr(datamodule, "dataset"):
        return
    for split in splits:
        size = len(datamodule.dataset(split))
        if size < world_size:
            raise DataError(
                f"the {split} split has {size} image(s) but the run uses {world_size} processes "
                f"(trainer.devices × trainer.num_nodes); each process needs at least one: "
                f"use fewer devices or more {split} images"
            )
