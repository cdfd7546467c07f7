"""Summarise a sweep in one look: ``python -m segpets.summarize <multirun dir> [--sort KEY]``.

Every run folder under the given directory (any folder with a ``.hydra/`` inside: a multirun,
``outputs/<task>/runs`` or a single run) becomes one row: the overrides that differ between
runs, best val Dice, test Dice, epochs and wall time, sorted by ``--sort`` (best first). The
table is printed as Markdown and written to ``summary.csv``; ``summary_loss.png`` (train and val
loss per epoch) and ``summary_val_dice.png`` (val Dice per epoch) plot every run.

One source for the curves: the TensorBoard event files each run writes (the default logger).
Test Dice comes from ``test_metrics.json``, the file ``segpets.train`` writes after testing.
A run whose ``overrides.yaml`` cannot be read (broken YAML, a tag, anything but a list of
strings) is left out with one warning naming the file; the others are tabulated.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from segpets.command import tables
from segpets.command.outputs import atomic_write
from segpets.errors import ConfigError, user_errors

COLUMNS = ("run", "overrides", "best_val_dice", "test_dice", "epochs", "wall_s")
CURVES = {"train_loss": "train/loss_epoch", "val_loss": "val/loss", "val_dice": "val/dice"}


@dataclass
class Run:
    """One training run: where it is, what it changed, and what it measured."""

    path: Path
    overrides: list[str]
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # name → (epoch, v)
    test_dice: float = math.nan
    wall_s: float = math.nan

    @property
    def best_val_dice(self) -> float:
        return max((v for _, v in self.curves.get("val_dice", [])), default=math.nan)

    @property
    def epochs(self) -> int:
        """Epochs trained (the last epoch any curve reached, counted from 1)."""
        return 1 + max((e for c in self.curves.values() for e, _ in c), default=-1)


def find_runs(root: Path) -> list[Run]:
    """Every readable run folder under ``root`` (``root`` itself if it is one), in path order;
    a run whose record cannot be read is left out with a warning naming it and why."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"no such directory '{root}' (give a multirun or run folder)")
    dirs = sorted({p.parent.parent for p in root.rglob(".hydra/overrides.yaml")}, key=_run_key)
    if not dirs:
        raise ConfigError(f"no runs under '{root}' (expected folders with .hydra/overrides.yaml)")
    runs = []
    for folder in dirs:
        try:
            runs.append(load_run(folder))
        except BadRecord as err:
            print(f"segpets: warning: skipping run '{folder}': {err}", file=sys.stderr, flush=True)
    if not runs:
        raise ConfigError(f"none of the {len(dirs)} runs under '{root}' has a readable record")
    return runs


class BadRecord(Exception):
    """A run record that cannot be read (the message says which file and why)."""


def read_overrides(path: Path) -> list[str]:
    """The overrides a run record lists (``.hydra/overrides.yaml``: a YAML list of strings),
    read with ``yaml.safe_load`` (no tags run code); :class:`BadRecord` for anything else."""
    try:
        overrides = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        detail = " ".join(str(err).split())[:160]
        raise BadRecord(f"'{path}' is not readable YAML ({detail})") from None
    if overrides is None:
        return []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise BadRecord(f"'{path}' is not a list of overrides (got {type(overrides).__name__})")
    return overrides


def _run_key(path: Path) -> tuple:
    """Numeric job folders (0, 1, …, 10) in numeric order, others by name."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.parts)


def load_run(path: Path) -> Run:
    """One run folder's row; :class:`BadRecord` when its overrides cannot be read."""
    run = Run(path=path, overrides=read_overrides(path / ".hydra" / "overrides.yaml"))
    report = path / "test_metrics.json"
    try:  # absent when the run was not tested (or crashed); unreadable if cut off mid-write
        run.test_dice = float(json.loads(report.read_text())["metrics"]["test/dice"])
    except (OSError, ValueError, KeyError, TypeError):
        run.test_dice = math.nan
    run.curves, run.wall_s = read_curves(path / "tensorboard")
    return run


def read_curves(logdir: Path) -> tuple[dict[str, list[tuple[int, float]]], float]:
    """Per-epoch curves from a run's TensorBoard folder, and the time from its first to its
    last event (training and testing, without start-up) in seconds."""
    if not logdir.is_dir():
        return {}, math.nan
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0}).Reload()
    tags = set(acc.Tags()["scalars"])
    if "epoch" not in tags:
        return {}, math.nan
    step_epoch: dict[int, int] = {}  # logging step → epoch; the end of epoch e and the start
    for event in acc.Scalars("epoch"):  # of e+1 can share a step: the end's values are epoch e
        step_epoch[event.step] = min(int(event.value), step_epoch.get(event.step, 10**9))
    curves = {
        name: [(step_epoch.get(e.step, -1), e.value) for e in acc.Scalars(tag)]
        for name, tag in CURVES.items()
        if tag in tags
    }
    times = [e.wall_time for tag in tags for e in acc.Scalars(tag)]
    return curves, max(times) - min(times)


def varying(runs: list[Run]) -> tuple[list[list[str]], list[str]]:
    """Each run's overrides that not all runs share, and the shared ones."""
    common = set.intersection(*(set(r.overrides) for r in runs)) if len(runs) > 1 else set()
    own = [[o for o in r.overrides if o not in common] for r in runs]
    return own, [o for o in runs[0].overrides if o in common]


def table(runs: list[Run], sort: str = "best_val_dice") -> tuple[list[dict], list[str]]:
    """Rows (dicts over ``COLUMNS``) sorted by ``sort``, best first (NaN last), and the
    overrides every run shares."""
    if sort not in COLUMNS[2:]:
        raise ConfigError(f"--sort must be one of {', '.join(COLUMNS[2:])}; got '{sort}'")
    own, common = varying(runs)
    rows = [
        {
            "run": str(r.path),
            "overrides": " ".join(o) or "(none)",
            "best_val_dice": r.best_val_dice,
            "test_dice": r.test_dice,
            "epochs": r.epochs,
            "wall_s": r.wall_s,
        }
        for r, o in zip(runs, own, strict=True)
    ]
    sign = 1 if sort == "wall_s" else -1  # less time is better; more of the rest is

    def key(row: dict) -> tuple[bool, float]:
        value = float(row[sort])
        return (math.isnan(value), 0.0 if math.isnan(value) else sign * value)

    rows.sort(key=key)
    return rows, common


def markdown(rows: list[dict], root: Path) -> str:
    """The rows as a Markdown table: run folders relative to ``root``, wall time to 0.1 s."""

    def cell(key: str, value: object) -> str:
        if key == "run":
            return str(Path(str(value)).relative_to(root)) if value != str(root) else "."
        if key == "wall_s" and isinstance(value, float) and not math.isnan(value):
            return f"{value:.1f}"
        return tables.format_cell(key, value)

    return tables.markdown(rows, COLUMNS, cell)


def short_labels(overrides: list[list[str]], names: list[str], width: int = 40) -> list[str]:
    """Plot labels for runs: each run's own overrides with keys shortened to their last part
    (``optimizer.lr=1e-3`` → ``lr=1e-3``), at most ``width`` characters (cut with ``…``); the
    run's folder name where it has no own overrides, and where two labels would be equal."""
    labels = []
    for own, name in zip(overrides, names, strict=True):
        parts = [_short_override(o) for o in own]
        label = " ".join(parts) or name
        labels.append(label if len(label) <= width else label[: width - 1] + "…")
    clash = {x for x in labels if labels.count(x) > 1}
    return [f"{name}: {x}" if x in clash else x for x, name in zip(labels, names, strict=True)]


def _short_override(override: str) -> str:
    key, sep, value = override.partition("=")
    return f"{key.lstrip('+~').rsplit('.', 1)[-1]}{sep}{value}"


def plot(runs: list[Run], labels: list[str], out: Path) -> list[Path]:
    """``summary_loss.png`` (train solid, val dashed) and ``summary_val_dice.png``; the legend
    (``labels``, one per run) beside the axes, so long labels never squeeze the plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figures = {"loss": ("train_loss", "val_loss"), "val_dice": ("val_dice",)}
    written = []
    for name, curves in figures.items():
        fig, ax = plt.subplots(figsize=(8, 5))
        for i, (run, label) in enumerate(zip(runs, labels, strict=True)):
            for j, (curve, style) in enumerate(zip(curves, ("-", "--"), strict=False)):
                points = run.curves.get(curve, [])
                if points:
                    xs, ys = zip(*points, strict=True)
                    tag = label if j == 0 else "_nolegend_"  # one entry per run (its colour)
                    ax.plot(xs, ys, style, color=f"C{i % 10}", marker=".", label=tag)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(
            "loss (BCE + Dice): train solid, val dashed"
            if name == "loss"
            else "val Dice (per-image mean)"
        )
        ax.grid(alpha=0.3)
        if ax.lines:
            columns = 1 + len(ax.lines) // 24  # a long sweep: more columns, not a taller figure
            ax.legend(
                fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0,
                ncols=columns, frameon=False,
            )  # fmt: skip
        path = out / f"summary_{name}.png"
        atomic_write(  # the figure grows to hold the legend
            path,
            lambda tmp, fig=fig: fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight"),
        )
        plt.close(fig)
        written.append(path)
    return written


def summarize(root: Path, sort: str = "best_val_dice", out: Path | None = None) -> list[dict]:
    """Print the table, write ``summary.csv`` and the plots into ``out`` (default ``root``)."""
    root = Path(root).expanduser().resolve()
    runs = find_runs(root)
    rows, common = table(runs, sort)
    out = Path(out or root)
    out.mkdir(parents=True, exist_ok=True)
    tables.write_csv(out / "summary.csv", rows, COLUMNS)
    labels = short_labels(varying(runs)[0], [r.path.name for r in runs])
    plots = plot(runs, labels, out)
    print(f"{len(rows)} runs in {root}, sorted by {sort}")
    if common:
        print(f"shared overrides: {' '.join(common)}")
    print()
    print(markdown(rows, root))
    print()
    print(f"written: {out / 'summary.csv'}, " + ", ".join(str(p) for p in plots))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="segpets-summarize", description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="a multirun folder (or any folder of runs)")
    parser.add_argument("--sort", default="best_val_dice", help=f"one of {COLUMNS[2:]}")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: root)")
    args = parser.parse_args(argv)
    # user_errors() prints its one line itself; without Hydra's logging set up, its log record
    # would reach Python's last-resort handler and be printed a second time
    logging.getLogger("segpets.errors").addHandler(logging.NullHandler())
    with user_errors():
        summarize(args.root, args.sort, args.out)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
