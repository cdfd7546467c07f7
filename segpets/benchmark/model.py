"""The model side of ``segpets.bench``: training img/s through Lightning vs a plain loop on one
fixed batch, and inference img/s per memory format, precision and compile."""

from __future__ import annotations

import copy
import itertools
import logging
import statistics

import lightning as L
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from segpets.benchmark.data import timed_trainer
from segpets.benchmark.timing import StepTimes, Timer, autocast, timed_rates

log = logging.getLogger(__name__)


class FixedBatch(Dataset):
    """The same collated batch ``length`` times (DataLoader with ``batch_size=None``)."""

    def __init__(self, batch: dict, length: int) -> None:
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        return self.batch


def train_rates(cfg: DictConfig, module: L.LightningModule, batch: dict, device) -> tuple:
    """(Lightning img/s, plain-loop img/s) per repeat, the two alternating so that a change of
    machine load hits both alike. Lightning: one short ``fit`` per repeat, timed from the end
    of the last warm-up step to the end of the last step. Plain: the loop Lightning replaces,
    on a copy of the same module (net, loss) with the same optimizer factory."""
    timer, n = Timer(device), len(batch["image"])
    model = copy.deepcopy(module).to(device).train()
    if cfg.module.get("compile"):
        model.net.compile()  # deepcopy drops an in-place compile: the copy would run eager
    optimizer = module.optimizer_factory(params=model.parameters())

    def plain_step() -> None:
        # the uint8 batch starts on the CPU each step, as it comes from a loader (and as
        # Lightning gets it), and is normalised on the device, as the module's hook does
        images = model.normalize(batch["image"].to(device, non_blocking=True))
        masks = batch["mask"].to(device, non_blocking=True).float()
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, cfg.precision):
            loss = model.loss(model(images), masks)
        loss.backward()
        optimizer.step()

    lightning, plain = [], []
    for _ in range(cfg.repeats):
        clock = StepTimes(timer, marks={cfg.warmup - 1, cfg.warmup + cfg.steps - 1})
        trainer = timed_trainer(cfg, device, clock)
        loader = DataLoader(FixedBatch(batch, cfg.warmup + cfg.steps), batch_size=None)
        trainer.fit(module, train_dataloaders=loader)
        first, last = clock.times
        lightning.append(cfg.steps * n / (last - first))
        plain += timed_rates(plain_step, timer, cfg.warmup, cfg.steps, 1, n)
    return lightning, plain


def inference_rows(cfg: DictConfig, net: torch.nn.Module, images: torch.Tensor, device) -> list:
    """eval-mode, no-grad img/s for every (memory format, precision[, compile]) variant."""
    rows, net_compiled = [], bool(cfg.module.get("compile"))
    for compiled, channels_last, precision in itertools.product(
        [False, True] if cfg.inference.compile and not net_compiled else [net_compiled],
        cfg.inference.channels_last,
        cfg.inference.precisions,
    ):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = copy.deepcopy(net).to(device, memory_format=fmt).eval()
        if compiled:
            model.compile()  # also for module.compile=true: deepcopy dropped the net's compile
        x = images.to(device).contiguous(memory_format=fmt)

        def step(model=model, x=x, precision=precision) -> None:
            with torch.inference_mode(), autocast(device, precision):
                model(x)

        rates = timed_rates(step, Timer(device), cfg.warmup, cfg.steps, cfg.repeats, len(x))
        variant = f"{'channels_last' if channels_last else 'NCHW'} {precision}"
        log.info("inference %s: median %.3g img/s", variant, statistics.median(rates))
        rows.append(
            {
                "variant": variant + (" compile" if compiled else ""),
                "dtype": precision,
                **Timer.summary(rates),
            }
        )
    return rows
