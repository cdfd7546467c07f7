"""segpets.summarize on hand-made run folders whose event files hold known values."""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import pytest
import yaml
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from segpets.summarize import main, read_curves, summarize


def fake_run(
    path: Path,
    overrides: list[str],
    val_dice: list[float],
    test_dice: float | None,
    start: float = 1000.0,
    seconds: float = 60.0,
) -> Path:
    """A run folder as segpets.train leaves it: .hydra/overrides.yaml, test_metrics.json and
    TensorBoard scalars logged the way Lightning logs them (with an ``epoch`` scalar)."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if test_dice is not None:
        report = {"ckpt_path": None, "metrics": {"test/dice": test_dice}}
        (path / "test_metrics.json").write_text(json.dumps(report))
    writer = SummaryWriter(str(path / "tensorboard"))
    last = len(val_dice) - 1
    for epoch, dice in enumerate(val_dice):
        step = 10 * (epoch + 1)
        t = start + seconds * epoch / max(last, 1)
        for tag, value in (("epoch", epoch), ("val/dice", dice), ("val/loss", 1 - dice)):
            writer.add_scalar(tag, value, step, walltime=t)
        writer.add_scalar("train/loss_epoch", 1.1 - dice, step, walltime=t)
        writer.add_scalar("epoch", epoch + 1, step, walltime=t)  # next epoch's first step
    writer.close()
    return path


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "multirun"
    shared = "model.width=4"
    fake_run(root / "0", [shared, "optimizer.lr=1e-4"], [0.5, 0.6, 0.55], 0.58, seconds=30)
    fake_run(root / "1", [shared, "optimizer.lr=1e-3"], [0.7, 0.8], 0.79, seconds=90)
    fake_run(root / "2", [shared, "optimizer.lr=1e-2"], [0.2, 0.4, 0.3, 0.1], None, seconds=10)
    (root / "10" / ".hydra").mkdir(parents=True)  # crashed before logging anything
    (root / "10" / "test_metrics.json").write_text('{"metrics": {"test/di')  # cut off
    (root / "10" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([shared, "x=1"]))
    return root


def test_curves_are_per_epoch_and_wall_time_spans_the_events(sweep: Path) -> None:
    curves, wall = read_curves(sweep / "0" / "tensorboard")
    # values logged at a step shared with the next epoch's start belong to the epoch ending
    assert [e for e, _ in curves["val_dice"]] == [0, 1, 2]
    assert [v for _, v in curves["val_dice"]] == pytest.approx([0.5, 0.6, 0.55])
    assert [v for _, v in curves["train_loss"]] == pytest.approx([0.6, 0.5, 0.55])
    assert wall == pytest.approx(30.0)
    assert read_curves(sweep / "nowhere") == ({}, pytest.approx(math.nan, nan_ok=True))


def test_rows_sorted_by_best_val_dice_with_varying_overrides(sweep: Path, capsys) -> None:
    rows = summarize(sweep)
    assert [Path(r["run"]).name for r in rows] == ["1", "0", "2", "10"]  # crashed run last
    assert [r["best_val_dice"] for r in rows[:3]] == pytest.approx([0.8, 0.6, 0.4])
    assert [r["epochs"] for r in rows] == [2, 3, 4, 0]
    assert rows[0]["overrides"] == "optimizer.lr=1e-3"  # the shared model.width=4 is not shown
    assert rows[0]["test_dice"] == pytest.approx(0.79) and math.isnan(rows[2]["test_dice"])
    assert rows[0]["wall_s"] == pytest.approx(90.0)

    out = capsys.readouterr().out
    assert "4 runs in" in out and "shared overrides: model.width=4" in out
    assert "| 1 | optimizer.lr=1e-3 | 0.8000 | 0.7900 | 2 | 90.0 |" in out
    assert "| 2 | optimizer.lr=1e-2 | 0.4000 | – | 4 | 10.0 |" in out
    with (sweep / "summary.csv").open() as f:
        assert [r["run"] for r in csv.DictReader(f)] == [r["run"] for r in rows]
    for name in ("summary_loss.png", "summary_val_dice.png"):
        assert (sweep / name).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("key", "order"), [("test_dice", ["1", "0", "2", "10"]), ("wall_s", ["2", "0", "1", "10"])]
)
def test_sort_key(sweep: Path, key: str, order: list[str], tmp_path: Path) -> None:
    rows = summarize(sweep, sort=key, out=tmp_path / "elsewhere")
    assert [Path(r["run"]).name for r in rows] == order
    assert (tmp_path / "elsewhere" / "summary.csv").is_file()
    assert not (sweep / "summary.csv").exists()


@pytest.mark.parametrize("bad", ["no-runs", "bad-sort"])
def test_cli_errors_are_one_line_exit_2(bad: str, sweep: Path, tmp_path: Path, capsys) -> None:
    args = [str(tmp_path / "empty")] if bad == "no-runs" else [str(sweep), "--sort", "dice"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("segpets: error: ")
    assert ("no runs under" if bad == "no-runs" else "--sort must be one of") in err[0]


LONG = [
    "experiment=smp_unet_mobilenet",
    "model.encoder_name=efficientnet-b0",
    "data.train_transform.transforms.0.scale=[0.5,1.0]",
    "optimizer.weight_decay=0.0001",
]


def test_plots_stay_readable_with_long_overrides(tmp_path: Path, monkeypatch) -> None:
    """Six runs whose own overrides run to ~150 characters: short legend labels (keys cut to
    their last part, ≤ 40 characters), the legend beside the axes, the axes as wide as with no
    legend at all (before: the full override strings inside the axes squeezed them into a
    sliver, and matplotlib warned "Tight layout not applied")."""
    import matplotlib.axes
    import matplotlib.pyplot as plt

    root = tmp_path / "multirun"
    for i in range(6):
        own = [f"{o}{i}" for o in LONG] if i % 2 else [f"optimizer.lr={i}e-4", *LONG]
        fake_run(root / str(i), own, [0.5 + 0.05 * i, 0.6 + 0.05 * i], 0.6)
    legends, saved = [], []
    real_legend, real_close = matplotlib.axes.Axes.legend, plt.close

    def spy_legend(ax, *args, **kwargs):
        legends.append((ax, real_legend(ax, *args, **kwargs)))
        return legends[-1][1]

    def spy_close(fig):  # the axes' share of the saved figure's width, and the legend's place
        fig.canvas.draw()
        ax, legend = legends[-1]
        box, axes = legend.get_window_extent(), ax.get_window_extent()
        saved.append((box.x0 >= axes.x1, [t.get_text() for t in legend.get_texts()]))
        real_close(fig)

    monkeypatch.setattr(matplotlib.axes.Axes, "legend", spy_legend)
    monkeypatch.setattr(plt, "close", spy_close)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Tight layout not applied" would fail here
        summarize(root)
    assert len(saved) == 2
    for outside, labels in saved:
        assert outside  # the legend lies right of the axes, not over the curves
        assert all(len(label) <= 40 for label in labels), labels
        assert not any("data.train_transform" in label for label in labels)
    assert saved[0][1] == saved[1][1]  # the loss plot: one entry per run too (train solid)
    assert saved[1][1][0] == "lr=0e-4 experiment=smp_unet_mobilenet e…"
    width = Image.open(root / "summary_val_dice.png").size[0]
    assert 800 <= width <= 1300  # the figure grew to hold the legend; the axes kept theirs
