"""Timing for ``segpets.bench``: medians of repeated timings, the FLOPs of a net, a matmul
peak to compare against, and clocks inside Lightning's loop."""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch.utils.flop_counter import FlopCounterMode

from segpets.errors import ConfigError


class Timer:
    """Medians and spreads of repeated timings; synchronises the GPU before each clock read."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @staticmethod
    def summary(rates: list[float]) -> dict[str, float]:
        return {
            "img_per_s": statistics.median(rates),
            "img_per_s_min": min(rates),
            "img_per_s_max": max(rates),
        }


def timed_rates(
    step: Callable[[], None], timer: Timer, warmup: int, steps: int, repeats: int, images: int
) -> list[float]:
    """img/s of ``repeats`` blocks of ``steps`` calls of ``step`` (``images`` each), each block
    after ``warmup`` untimed calls."""
    rates = []
    for _ in range(repeats):
        for _ in range(warmup):
            step()
        start = timer.now()
        for _ in range(steps):
            step()
        rates.append(steps * images / (timer.now() - start))
    return rates


def count_gflops(net: torch.nn.Module, loss: torch.nn.Module, image: torch.Tensor) -> tuple:
    """(forward GFLOP/img, forward+backward GFLOP/img), counted on a batch of 2 (BatchNorm in
    train mode needs more than one value per channel)."""
    net = copy.deepcopy(net).train()
    x = image.expand(2, *image.shape).contiguous()
    with FlopCounterMode(display=False) as fwd, torch.no_grad():
        net(x)
    with FlopCounterMode(display=False) as both:
        logits = net(x)
        loss(logits, torch.zeros_like(logits)).backward()
    return fwd.get_total_flops() / 2e9, both.get_total_flops() / 2e9


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> list[float]:
    """GFLOP/s of ``repeats`` n×n @ n×n matmuls after one untimed."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    timer = Timer(device)
    rates = timed_rates(lambda: torch.mm(a, b), timer, 1, 1, repeats, 1)
    return [r * 2 * n**3 / 1e9 for r in rates]


class StepTimes(L.Callback):
    """Clock readings at the end of the training steps numbered in ``marks`` (Lightning's own
    overhead included). Only those steps synchronise the GPU, as the plain loop's clock does:
    a sync every step would stall the CPU/GPU overlap the plain loop keeps."""

    def __init__(self, timer: Timer, marks: set[int]) -> None:
        self.timer, self.marks, self.times = timer, marks, []

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step - 1 in self.marks:
            self.times.append(self.timer.now())


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision in ("32-true", "32", "fp32"):
        return contextlib.nullcontext()
    if precision in ("bf16-mixed", "bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ConfigError(f"precision must be 32-true or bf16-mixed for the bench, got '{precision}'")
