"""Measure where the time goes: ``python -m segpets.bench [model=...] [data.image_size=...]
[batch_size=...] [data.root=...]``.

One process, one model, one batch, one optimizer. Every number is a median over ``repeats``
timed repeats of ``steps`` steps, each after ``warmup`` untimed steps, with min/max as spread:

- ``train``: img/s through LightningModule + Trainer vs a plain loop (forward, loss, backward,
  step) over the same fixed batch; ratio = Lightning / plain (the framework's overhead).
- ``inference``: eval mode, no grad, NCHW vs channels_last, fp32 vs bf16 autocast (and
  torch.compile with ``inference.compile=true``); ratio = vs fp32 NCHW.
- ``data``: decode + augment + collate img/s of the train loader per worker count, without and
  with ``data.cache``; ratio = data img/s ÷ Lightning training img/s (≥ 1: data keeps up).
- ``train`` end to end: ``Trainer.fit`` fed by the real loader as ``data`` configures it;
  ratio = ÷ the fixed-batch Lightning row (< 1: training waits for data).
- ``peak``: a measured n×n matmul, the machine's practical peak; GFLOP/img (counted by
  ``torch.utils.flop_counter``) × img/s gives each row's achieved GFLOP/s and fraction of it.

Writes ``bench.md``, ``bench.csv`` and ``bench.json`` to the run folder and prints the table.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from segpets.benchmark.data import data_rows, end_to_end_rates, end_to_end_row
from segpets.benchmark.model import inference_rows, train_rates
from segpets.benchmark.timing import StepTimes, Timer, count_gflops, matmul_peak, timed_rates
from segpets.command import tables
from segpets.command.build import build_module, instantiate_or_explain
from segpets.command.entry import entry_point
from segpets.command.outputs import atomic_write_text
from segpets.command.record import accept_run, task_run
from segpets.errors import ConfigError

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
    eager = build_module(OmegaConf.merge(cfg, {"module": {"compile": False}}), with_optimizer=False)
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
    return f"{head}\n\n{tables.markdown(rows, COLUMNS, _fmt)}\n"


def _fmt(column: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def write_reports(rows: list[dict], meta: dict, out: Path) -> str:
    """``bench.{md,json,csv}`` in ``out``, each written whole; returns the Markdown table."""
    table = markdown(rows, meta)
    atomic_write_text(out / "bench.md", table)
    atomic_write_text(out / "bench.json", json.dumps({"meta": meta, "rows": rows}, indent=2))
    tables.write_csv(out / "bench.csv", rows, COLUMNS)
    return table


@entry_point("bench")
@hydra.main(version_base="1.3", config_path="configs", config_name="bench")
def main(cfg: DictConfig) -> None:
    with task_run(cfg):
        accept_run()
        out = Path(HydraConfig.get().runtime.output_dir)
        rows, meta = run_bench(cfg)
        print(write_reports(rows, meta, out) + f"\n[written: {out}/bench.{{md,csv,json}}]")


if __name__ == "__main__":
    main()
