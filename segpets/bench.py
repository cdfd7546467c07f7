"""Measure where the time goes: ``python -m segpets.bench [model=...] [data.image_size=...]
[batch_size=...] [data.root=...]``.

One process, one model, one batch, one optimizer. Every number is a median over ``repeats``
timed repeats of ``steps`` steps, each after ``warmup`` untimed steps, with min/max as spread:

- ``train``: img/s through LightningModule + Trainer vs a plain loop (forward, loss, backward,
  step) over the same fixed batch; ratio = Lightning / plain (the framework's overhead).
- ``inference``: eval mode, no grad, NCHW vs channels_last, fp32 vs bf16 autocast (and
  torch.compile with ``inference.compile=true``); ratio = vs fp32 NCHW.
- ``data``: decode + augment + collate img/s of the train loader per worker count, without and
  with ``data.cache``, for the uint8 batches segpets loads and the float32 ones it loaded
  before; ratio = data img/s ÷ Lightning training img/s (≥ 1: data keeps up).
- ``train`` end to end: ``Trainer.fit`` fed by the real loader as ``data`` configures it;
  ratio = ÷ the fixed-batch Lightning row (< 1: training waits for data).
- ``peak``: a measured n×n matmul, the machine's practical peak; GFLOP/img (counted by
  ``torch.utils.flop_counter``) × img/s gives each row's achieved GFLOP/s and fraction of it.

Writes ``bench.md``, ``bench.csv`` and ``bench.json`` to the run folder and prints the table.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import functools
import itertools
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from segpets.bench_data import data_rows, end_to_end_rates, end_to_end_row, timed_trainer
from segpets.build import build_module, instantiate_or_explain
from segpets.cli import entry_point
from segpets.errors import ConfigError
from segpets.runlog import accept_run, task_run

log = logging.getLogger(__name__)

COLUMNS = [
    "benchmark",
    "variant",
    "img_per_s",
    "img_per_s_min",
    "img_per_s_max",
    "ratio",
    "gflop_per_img",
    "gflop_per_s",
    "peak_fraction",
    "note",
]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


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


# --- FLOPs and peak ---------------------------------------------------------------------
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


# --- training -----------------------------------------------------------------------------
class FixedBatch(Dataset):
    """The same collated batch ``length`` times (DataLoader with ``batch_size=None``)."""

    def __init__(self, batch: dict, length: int) -> None:
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        return self.batch


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


def train_rates(cfg: DictConfig, module: L.LightningModule, batch: dict, device) -> tuple:
    """(Lightning img/s, plain-loop img/s) per repeat, the two alternating so that a change of
    machine load hits both alike. Lightning: one short ``fit`` per repeat, timed from the end
    of the last warm-up step to the end of the last step. Plain: the loop Lightning replaces,
    on a copy of the same module (net, loss) with the same optimizer factory."""
    timer, n = Timer(device), len(batch["image"])
    model = copy.deepcopy(module).to(device).train()
    if cfg.model.get("compile"):
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


# --- inference and data ---------------------------------------------------------------------
def inference_rows(cfg: DictConfig, net: torch.nn.Module, images: torch.Tensor, device) -> list:
    """eval-mode, no-grad img/s for every (memory format, precision[, compile]) variant."""
    rows, net_compiled = [], bool(cfg.model.get("compile"))
    for compiled, channels_last, precision in itertools.product(
        [False, True] if cfg.inference.compile and not net_compiled else [net_compiled],
        cfg.inference.channels_last,
        cfg.inference.precisions,
    ):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = copy.deepcopy(net).to(device, memory_format=fmt).eval()
        if compiled:
            model.compile()  # also for model.compile=true: deepcopy dropped the net's compile
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


# --- the report --------------------------------------------------------------------------
def run_bench(cfg: DictConfig) -> tuple[list[dict], dict]:
    """All benchmark rows (``COLUMNS``) and the machine/run description."""
    if cfg.warmup < 1 or cfg.steps < 1 or cfg.repeats < 1:
        raise ConfigError("warmup, steps and repeats must all be >= 1")
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    L.seed_everything(cfg.seed, verbose=False)
    dm = instantiate_or_explain(cfg.data, "data", num_workers=0)
    batch = next(iter(dm.train_dataloader()))
    batch = {"image": batch["image"], "mask": batch["mask"]}  # uint8, as the loader gives it
    module = build_module(cfg)
    inputs = module.normalize(batch["image"])  # what the net sees
    # counted on an eager twin: a compiled net would be compiled once more for the count's shape
    eager = build_module(OmegaConf.merge(cfg, {"model": {"compile": False}}), with_optimizer=False)
    fwd_gflop, train_gflop = count_gflops(eager.net, eager.loss, inputs[0])
    peak = {
        d: Timer.summary(matmul_peak(device, DTYPES[d], cfg.peak.n, cfg.peak.repeats))
        for d in cfg.peak.dtypes
    }
    peak_of = {d: p["img_per_s"] for d, p in peak.items()}  # GFLOP/s, stored as "img_per_s"
    train_dtype = "bf16" if str(cfg.precision).startswith("bf16") else "fp32"

    rows = [
        {
            "benchmark": "peak",
            "variant": f"matmul {cfg.peak.n}x{cfg.peak.n} {d}",
            "note": "median GFLOP/s in img_per_s columns",
            **p,
        }
        for d, p in peak.items()
    ]
    lit, plain = (Timer.summary(r) for r in train_rates(cfg, module, batch, device))
    log.info("train: Lightning %.3g img/s, plain loop %.3g", lit["img_per_s"], plain["img_per_s"])
    for variant, r, ratio in (
        ("lightning", lit, lit["img_per_s"] / plain["img_per_s"]),
        ("plain loop", plain, 1.0),
    ):
        rows.append(
            {
                "benchmark": "train",
                "variant": f"{variant} {cfg.precision}",
                **r,
                "ratio": ratio,
                "note": "ratio: vs plain loop",
                **_achieved(r, train_gflop, peak_of.get(train_dtype)),
            }
        )
    clocks = functools.partial(StepTimes, Timer(device))
    e2e = end_to_end_rates(cfg, module, device, clocks)
    e2e_row = end_to_end_row(e2e, lit["img_per_s"], Timer.summary, cfg)
    rows.append({**e2e_row, **_achieved(e2e_row, train_gflop, peak_of.get(train_dtype))})
    inference = inference_rows(cfg, module.net, inputs, device)
    base = inference[0]["img_per_s"]
    for r in inference:
        rows.append(
            {
                "benchmark": "inference",
                **r,
                "ratio": r["img_per_s"] / base,
                "note": f"ratio: vs {inference[0]['variant']}",
                **_achieved(r, fwd_gflop, peak_of.get(r.pop("dtype"))),
            }
        )

    def timed_data(step: Callable[[], Any], batches: int, size: int) -> list[float]:
        return timed_rates(step, Timer(torch.device("cpu")), cfg.warmup, batches, cfg.repeats, size)

    for r in data_rows(cfg, timed_data, Timer.summary):
        note = "; ".join(filter(None, [r.pop("note", ""), "ratio: ÷ Lightning training img/s"]))
        rows.append(
            {"benchmark": "data", **r, "ratio": r["img_per_s"] / lit["img_per_s"], "note": note}
        )
    meta = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": _machine(device),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "model": model_name(cfg.model),
        "params_M": sum(p.numel() for p in module.net.parameters()) / 1e6,
        "image_size": int(cfg.data.image_size),
        "batch_size": int(cfg.batch_size),
        "precision": cfg.precision,
        "timing": f"median of {cfg.repeats} repeats × {cfg.steps} steps after {cfg.warmup} "
        f"warm-up steps; min/max = spread",
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    return [{c: r.get(c, "") for c in COLUMNS} for r in rows], meta


def model_name(model: DictConfig) -> str:
    """The model class, with a zoo net's architecture and encoder: ``SmpNet(FPN, resnet34)``."""
    name = model._target_.rsplit(".", 1)[-1]
    parts = [str(model[k]) for k in ("arch", "encoder_name") if model.get(k)]
    return f"{name}({', '.join(parts)})" if parts else name


def _achieved(rates: dict, gflop_per_img: float, peak: float | None) -> dict:
    achieved = rates["img_per_s"] * gflop_per_img
    return {
        "gflop_per_img": gflop_per_img,
        "gflop_per_s": achieved,
        "peak_fraction": achieved / peak if peak else "",
    }


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} CPU cores"


def markdown(rows: list[dict], meta: dict) -> str:
    head = (
        f"{meta['model']} ({meta['params_M']:.2f} M params), {meta['image_size']} px, batch "
        f"{meta['batch_size']}, training precision {meta['precision']} — {meta['machine']}, "
        f"torch {meta['torch']}, {meta['threads']} threads, load average "
        f"{meta['load_average']}, {meta['date_utc']} UTC. {meta['timing']}."
    )
    lines = [head, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def write_reports(rows: list[dict], meta: dict, out: Path) -> str:
    table = markdown(rows, meta)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.md").write_text(table)
    (out / "bench.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    with (out / "bench.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return table


@entry_point("bench")
@hydra.main(version_base="1.3", config_path="../configs", config_name="bench")
def main(cfg: DictConfig) -> None:
    with task_run(cfg):
        accept_run()
        out = Path(HydraConfig.get().runtime.output_dir)
        rows, meta = run_bench(cfg)
        print(write_reports(rows, meta, out) + f"\n[written: {out}/bench.{{md,csv,json}}]")


if __name__ == "__main__":
    main()
