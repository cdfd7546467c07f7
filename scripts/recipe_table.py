"""Reproduce the recipe table of docs/performance.md: train every shipped experiment on a data
root (oxford-pet-24 by default), one run at a time, and print a Markdown row per run.

    python scripts/recipe_table.py --device cpu [--data ../shared/data/oxford-pet-24]
    python scripts/recipe_table.py --device gpu --rows seed_unet seed_res34
    python scripts/recipe_table.py --device cpu --list            # the rows and their commands

Each row is one ``python -m segpets.train`` command; wall time is the whole command (start-up,
data checks, the cache build in a fresh cache folder, training and the test of the best
checkpoint), Dice is the per-image test Dice it writes to ``test_metrics.json``. CPU rows that
would not fit a 2-core budget at the recipe's 256 px are run reduced, and say so in the table.
Outputs go to ``outputs/recipe_table/<time>/<row>`` (and ``table.md`` there).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

CPU_SMALL = ["data.num_workers=0", "data.persistent_workers=false", "data.cache=true"]
REDUCED_64 = ["trainer=cpu", "data.image_size=64", "data.batch_size=8", *CPU_SMALL]

# row name → (label in the table, overrides after experiment=...)
ROWS: dict[str, dict[str, tuple[str, list[str]]]] = {
    "cpu": {
        "cpu_fast": ("`cpu_fast` as shipped", ["experiment=cpu_fast"]),
        "cpu_pretrained": ("`cpu_pretrained` as shipped", ["experiment=cpu_pretrained"]),
        "quickstart": (
            "`quickstart` on Oxford Pet instead of its generated set",
            ["experiment=quickstart", "data=oxford_pet", *CPU_SMALL],
        ),
        "seed_unet": (
            "`seed_unet`, **reduced: 64 px, batch 8, 4 epochs** (256 px: ~23 min an epoch here)",
            ["experiment=seed_unet", *REDUCED_64, "trainer.max_epochs=4"],
        ),
        "seed_res34": (
            "`seed_res34`, **reduced: 64 px, batch 8, 10 epochs** (256 px is out of a CPU budget)",
            ["experiment=seed_res34", *REDUCED_64, "trainer.max_epochs=10"],
        ),
        "smp_unet_mobilenet": (
            "`smp_unet_mobilenet`, **encoder from scratch** (no weights offline)",
            ["experiment=smp_unet_mobilenet", "model.encoder_weights=null"],
        ),
        "smp_unet_r34": (
            "`smp_unet_r34`, **reduced: 64 px, encoder from scratch, 60 epochs**",
            [
                "experiment=smp_unet_r34",
                "model.encoder_weights=null",
                *REDUCED_64[:2],
                *CPU_SMALL,
                "trainer.max_epochs=60",
            ],
        ),
    },
    "gpu": {
        name: (f"`{name}` with `trainer=gpu`", [f"experiment={name}", "trainer=gpu"])
        for name in ("seed_unet", "seed_res34", "imagenet_res34", "smp_unet_r34", "cpu_fast")
    }
    | {"gpu_pretrained": ("`gpu_pretrained` as shipped", ["experiment=gpu_pretrained"])},
}


def run_row(name: str, overrides: list[str], data: str, out: Path) -> dict:
    """Train one row in its own folder and fresh cache; (wall s, epochs, test Dice, rc)."""
    run_dir = out / name
    cmd = [
        sys.executable,
        "-m",
        "segpets.train",
        *overrides,
        f"data.root={data}",
        f"hydra.run.dir={run_dir}",
        "callbacks.progress_bar.refresh_rate=0",
    ]
    env = {**os.environ, "SEGPETS_CACHE_DIR": str(out / f"cache-{name}")}
    start = time.perf_counter()
    with (out / f"{name}.log").open("w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - start
    metrics = run_dir / "test_metrics.json"
    dice = json.loads(metrics.read_text())["metrics"]["test/dice"] if metrics.is_file() else None
    last = run_dir / "checkpoints" / "last.ckpt"
    epochs = None
    if last.is_file():
        import torch

        epochs = torch.load(last, map_location="cpu", weights_only=True)["epoch"] + 1
    saved = run_dir / ".hydra" / "config.yaml"
    size = yaml.safe_load(saved.read_text())["data"]["image_size"] if saved.is_file() else None
    return {"rc": rc, "wall": wall, "dice": dice, "epochs": epochs, "size": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=ROWS, required=True)
    parser.add_argument("--data", default="../shared/data/oxford-pet-24")
    parser.add_argument("--rows", nargs="*", help="a subset of the device's rows (default all)")
    parser.add_argument("--list", action="store_true", help="print the rows and exit")
    args = parser.parse_args()
    unknown = sorted(set(args.rows or []) - set(ROWS[args.device]))
    if unknown:
        parser.error(f"--rows: no {args.device} row {unknown}; rows: {list(ROWS[args.device])}")
    rows = {k: v for k, v in ROWS[args.device].items() if not args.rows or k in args.rows}
    if args.list:
        for name, (label, overrides) in rows.items():
            command = " ".join(["python -m segpets.train", *overrides, f"data.root={args.data}"])
            print(f"{name}: {label}\n  {command}")
        return
    out = Path("outputs/recipe_table") / time.strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True)
    lines = [
        "| experiment | command | device | image size | epochs | wall time | per-image test Dice |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (label, overrides) in rows.items():
        r = run_row(name, overrides, args.data, out)
        dice = f"{r['dice']:.4f}" if r["dice"] is not None else f"failed (rc {r['rc']})"
        lines.append(
            f"| {label} | `python -m segpets.train {' '.join(overrides)} "
            f"data.root={args.data}` | {args.device} | {r['size']} | {r['epochs']} | "
            f"{r['wall']:.0f} s | {dice} |"
        )
        print(lines[-1], flush=True)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines) + f"\n(written to {out / 'table.md'})")


if __name__ == "__main__":
    main()
