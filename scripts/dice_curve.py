"""Print a run's validation Dice against wall-clock minutes, from its TensorBoard events.

    python scripts/dice_curve.py outputs/cpu_fast/runs/<time> [--csv curve.csv]

Minutes count from the run's first logged event (the first training step), so they exclude
Python start-up and data checks; the test Dice of the best checkpoint is read from
``test_metrics.json`` when the run wrote one.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def curve(run_dir: Path, tag: str = "val/dice") -> list[tuple[int, float, float]]:
    """(epoch, minutes since the first event, value) of ``tag``, in logging order."""
    events = sorted((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    if not events:
        raise SystemExit(f"no TensorBoard events under {run_dir / 'tensorboard'}")
    acc = EventAccumulator(str(events[0].parent), size_guidance={"scalars": 0})
    acc.Reload()
    start = min(e.wall_time for t in acc.Tags()["scalars"] for e in acc.Scalars(t))
    epochs = {e.step: int(e.value) for e in acc.Scalars("epoch")}
    return [(epochs.get(e.step, -1), (e.wall_time - start) / 60, e.value) for e in acc.Scalars(tag)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--csv", type=Path, help="also write the curve here")
    args = parser.parse_args()
    rows = curve(args.run_dir)
    print("| epoch | minutes | val/dice |\n|---:|---:|---:|")
    for epoch, minutes, value in rows:
        print(f"| {epoch} | {minutes:.2f} | {value:.4f} |")
    test = args.run_dir / "test_metrics.json"
    if test.is_file():
        metrics = json.loads(test.read_text())["metrics"]
        print(f"\ntest/dice (best checkpoint by val/dice) = {metrics['test/dice']:.4f}")
    if args.csv:
        with args.csv.open("w", newline="") as f:
            csv.writer(f).writerows([("epoch", "minutes", "val_dice"), *rows])


if __name__ == "__main__":
    main()
