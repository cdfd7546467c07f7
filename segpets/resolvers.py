"""OmegaConf resolvers segpets' configs use; registered when ``segpets`` is imported, before
any config is composed.

``${segpets.loader_workers:N}``: DataLoader workers for each of N processes on this machine.

``${segpets.input_stats:mean|std,DEFAULT}``: the input normalisation (``data.mean``/``data.std``)
of the composed config's model: the statistics its pretrained weights were trained with when
it has some (the model class's ``pretrained_input_stats``, e.g. the encoder's own mean/std for
``model=smp model.encoder_weights=imagenet``), else ``DEFAULT`` (the data config's). Values set
on the command line replace the interpolation; checkpoints store the resolved values, so
eval, predict and export normalise as training did.
"""

from __future__ import annotations

import os
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf


def usable_cpus() -> int:
    """CPUs this process may run on (a SLURM/cgroup allocation, not the whole machine)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def device_count(devices: Any) -> int:
    """Processes a Lightning ``trainer.devices`` value starts on one machine: an int n > 0 →
    n; ``-1``/``"auto"`` → every visible GPU (at least 1); a list of indices or a string
    like ``"0,1"`` → how many it names; ``"2"`` → 2."""
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            devices = -1
        elif "," in text:
            return max(1, len([d for d in text.split(",") if d.strip()]))
        else:
            devices = int(text)
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return max(1, len(devices))
    if int(devices) == -1:
        import torch

        return max(1, torch.cuda.device_count())
    return max(1, int(devices))


def loader_workers(devices: Any = 1) -> int:
    """Workers per training process: its share of the usable CPUs, one left for the process
    itself (at least 1): 16 CPUs and 1 GPU → 15; 16 CPUs and 4 GPUs → 3. ``devices`` is any
    ``trainer.devices`` value (:func:`device_count`)."""
    share = usable_cpus() // device_count(devices)
    return max(1, share - 1)


def input_stats(which: str, default: Any, *, _root_: DictConfig) -> ListConfig:
    """``data.mean`` (``which="mean"``) or ``data.std`` for the model ``_root_.model`` builds
    (module docstring). An unknown ``model._target_`` gives ``default``: building the model
    reports it, naming the key."""
    if which not in ("mean", "std"):
        raise ValueError(f"segpets.input_stats: 'mean' or 'std', got {which!r}")
    model = _root_.get("model")
    target = model.get("_target_") if isinstance(model, DictConfig) else None
    try:
        hook = getattr(get_class(target), "pretrained_input_stats", None) if target else None
    except Exception:  # not importable: left to building 'model'
        hook = None
    stats = hook(OmegaConf.to_container(model, resolve=True)) if hook else None
    # a ListConfig, not a list: OmegaConf.resolve (Hydra's --cfg job --resolve) refuses lists
    return OmegaConf.create([float(v) for v in (stats[which] if stats else default)])


def register() -> None:
    OmegaConf.register_new_resolver("segpets.loader_workers", loader_workers, replace=True)
    OmegaConf.register_new_resolver("segpets.input_stats", input_stats, replace=True)
