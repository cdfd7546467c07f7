"""The data side of ``segpets.bench``: loader throughput, and training end to end through the
real loader, to set against training on one fixed batch."""

from __future__ import annotations

import itertools
import logging
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from segpets.command.build import instantiate_or_explain

log = logging.getLogger(__name__)


def data_rows(cfg: DictConfig, timed: Callable[..., list[float]], summary: Callable) -> list:
    """Train-loader img/s (decode or cached read + augment + collate) per cache setting and
    worker count."""
    rows = []
    for cache, workers in itertools.product(cfg.data_bench.cache, cfg.data_bench.workers):
        dm = instantiate_or_explain(
            cfg.data, "data", cache=cache, num_workers=workers, persistent_workers=workers > 0
        )
        start = time.perf_counter()
        dm.dataset("train")  # builds (or finds) the cache entry: excluded from rates
        prepared = time.perf_counter() - start
        batches = _forever(dm.train_dataloader())
        rates = timed(lambda b=batches: next(b), cfg.data_bench.batches, dm.batch_size)
        variant = f"{'cache' if cache else 'no cache'}, {workers} workers"
        log.info("data %s: %.3g img/s", variant, statistics.median(rates))
        note = f"cache ready in {prepared:.1f} s" if cache else ""
        rows.append({"variant": variant, "note": note, **summary(rates)})
        del batches
    return rows


def _forever(loader: DataLoader) -> Iterator[dict]:
    while True:
        yield from loader


def timed_trainer(cfg: DictConfig, device: torch.device, clock: L.Callback) -> L.Trainer:
    """A bare ``Trainer`` for ``cfg.warmup + cfg.steps`` training steps on one ``device``, at
    ``cfg.precision``, with ``clock`` as its only callback: no validation, logger,
    checkpointing, progress bar or summary, so only the loop's own cost is timed."""
    return L.Trainer(
        accelerator=device.type,
        devices=1,
        precision=cfg.precision,
        max_steps=cfg.warmup + cfg.steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
        default_root_dir=cfg.paths.output_dir,
    )


def end_to_end_rates(
    cfg: DictConfig, module: L.LightningModule, device: torch.device, clock_factory: Callable
) -> list[float]:
    """img/s of ``Trainer.fit`` fed by the real train loader as ``cfg.data`` builds it
    (workers, cache, pinned memory), timed like the fixed-batch Lightning row: from the end of
    the last warm-up step to the end of the last step, ``repeats`` times."""
    rates = []
    dm = instantiate_or_explain(cfg.data, "data")
    dm.dataset("train")  # pre-scan and cache build: not training time
    for _ in range(cfg.repeats):
        clock = clock_factory(marks={cfg.warmup - 1, cfg.warmup + cfg.steps - 1})
        timed_trainer(cfg, device, clock).fit(module, train_dataloaders=dm.train_dataloader())
        first, last = clock.times
        rates.append(cfg.steps * dm.batch_size / (last - first))
    return rates


def end_to_end_row(rates: list[float], synthetic: float, summary: Callable, cfg: Any) -> dict:
    workers = cfg.data.num_workers
    return {
        "benchmark": "train",
        "variant": f"lightning end to end {cfg.precision}",
        **summary(rates),
        "ratio": summary(rates)["img_per_s"] / synthetic,
        "note": f"real loader ({workers} workers, cache {bool(cfg.data.cache)}); ratio: ÷ "
        f"Lightning on one fixed batch (< 1: data-bound)",
    }
