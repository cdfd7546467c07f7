"""Checkpoint writes that a kill cannot corrupt: Lightning's ``CheckpointIO`` plugin slot,
filled with :func:`segpets.command.outputs.atomic_write`.

Lightning's own ``TorchCheckpointIO`` writes through an fsspec transaction whose temp file lives
in the system temp dir; when that is another filesystem the final move is a copy, and a kill
during the copy leaves a truncated ``last.ckpt``. Here the checkpoint is serialised in memory
first (a failure there touches no file), then written beside its target and renamed over it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from segpets.command.outputs import atomic_write_bytes


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` that leaves either the old ``path`` or the complete new one."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)  # serialise first: a failure here touches no file at all
    atomic_write_bytes(path, buffer.getbuffer())


class AtomicCheckpointIO(TorchCheckpointIO):
    """``Trainer(plugins=[AtomicCheckpointIO()])``: every checkpoint Lightning writes
    (``last.ckpt``, the best ones, preemption saves) goes through :func:`atomic_torch_save`."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        atomic_torch_save(checkpoint, path)
