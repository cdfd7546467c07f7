"""Lightning's fixed per-step cost: ``Trainer.fit`` vs a plain loop on a model so small (a 1×1
conv on 8×8 images) that a step is nearly all framework. The difference is what Lightning adds to
every training step (hooks, optimizer closure, ``self.log``), to set against a real step time.

    python scripts/lightning_overhead.py [--steps 400] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from functools import partial

import lightning as L
import torch
from torch.utils.data import DataLoader

from segpets.benchmark.model import FixedBatch
from segpets.losses import BCEDiceLoss
from segpets.module import SegmentationModule

WARMUP = 50


class Clock(L.Callback):
    """Wall time from the end of step ``WARMUP`` to the end of the last step."""

    def __init__(self, last: int) -> None:
        self.last, self.start, self.end = last, 0.0, 0.0

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == WARMUP:
            self.start = time.perf_counter()
        if trainer.global_step == self.last:
            self.end = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--profile", action="store_true", help="cProfile the Lightning run")
    args = parser.parse_args()
    net = torch.nn.Conv2d(3, 1, 1)
    module = SegmentationModule(net, BCEDiceLoss(), partial(torch.optim.Adam, lr=1e-3))
    batch = {"image": torch.randn(2, 3, 8, 8), "mask": torch.zeros(2, 1, 8, 8)}

    clock = Clock(args.steps)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=args.steps, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[clock],
    )  # fmt: skip
    profiler = cProfile.Profile()
    if args.profile:
        profiler.enable()
    trainer.fit(module, DataLoader(FixedBatch(batch, args.steps), batch_size=None))
    profiler.disable()
    lightning_ms = (clock.end - clock.start) / (args.steps - WARMUP) * 1e3

    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)

    def plain_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        module.loss(module(batch["image"]), batch["mask"]).backward()
        optimizer.step()

    for _ in range(WARMUP):
        plain_step()
    start = time.perf_counter()
    for _ in range(args.steps - WARMUP):
        plain_step()
    plain_ms = (time.perf_counter() - start) / (args.steps - WARMUP) * 1e3
    print(f"per step: Lightning {lightning_ms:.2f} ms, plain loop {plain_ms:.2f} ms, "
          f"Lightning adds {lightning_ms - plain_ms:.2f} ms")  # fmt: skip
    if args.profile:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()
