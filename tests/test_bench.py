"""``python -m segpets.bench`` at tiny sizes: every benchmark row and every column, in the
printed Markdown and in the CSV/JSON it writes."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segpets.bench import COLUMNS, Timer, timed_rates
from tests.conftest import run_segpets

TINY = [
    "data=synthetic",
    "model.width=4",
    "data.image_size=32",
    "batch_size=4",
    "warmup=1",
    "steps=2",
    "repeats=2",
    "peak.n=64",
    "peak.repeats=2",
    "peak.dtypes=[fp32,bf16]",
    "data_bench.workers=[0,1]",
    "data_bench.batches=2",
    "data.num_workers=0",  # the end-to-end row's loader
]


@pytest.mark.slow
def test_bench_cli_emits_every_row_and_column(tmp_path: Path) -> None:
    proc = run_segpets("bench", [*TINY, "hydra.run.dir=run"], tmp_path)
    out = tmp_path / "run"
    rows = list(csv.DictReader((out / "bench.csv").open()))
    report = json.loads((out / "bench.json").read_text())
    assert list(rows[0]) == COLUMNS and len(report["rows"]) == len(rows)
    assert "| " + " | ".join(COLUMNS) + " |" in proc.stdout
    assert (out / "bench.md").read_text() in proc.stdout

    variants = {(r["benchmark"], r["variant"]) for r in rows}
    assert variants == {
        ("peak", "matmul 64x64 fp32"),
        ("peak", "matmul 64x64 bf16"),
        ("train", "lightning 32-true"),
        ("train", "plain loop 32-true"),
        ("train", "lightning end to end 32-true"),
        *(
            ("inference", f"{fmt} {p}")
            for fmt in ("NCHW", "channels_last")
            for p in ("fp32", "bf16")
        ),
        *(("data", f"{c}, {w} workers") for c in ("no cache", "cache") for w in (0, 1)),
    }
    for r in rows:
        low, mid, high = (float(r[k]) for k in ("img_per_s_min", "img_per_s", "img_per_s_max"))
        assert 0 < low <= mid <= high, r
        if r["benchmark"] != "peak":
            assert float(r["ratio"]) > 0, r
        if r["benchmark"] in ("train", "inference"):
            assert float(r["gflop_per_img"]) > 0 and float(r["peak_fraction"]) > 0, r
            assert float(r["gflop_per_s"]) == pytest.approx(
                float(r["img_per_s"]) * float(r["gflop_per_img"]), rel=1e-6
            )
    train = {r["variant"]: float(r["img_per_s"]) for r in rows if r["benchmark"] == "train"}
    ratio = next(float(r["ratio"]) for r in rows if r["variant"] == "lightning 32-true")
    assert ratio == pytest.approx(train["lightning 32-true"] / train["plain loop 32-true"])
    e2e = next(r for r in rows if r["variant"] == "lightning end to end 32-true")
    assert float(e2e["ratio"]) == pytest.approx(
        train["lightning end to end 32-true"] / train["lightning 32-true"], rel=1e-6
    )
    assert "real loader (0 workers, cache False)" in e2e["note"]
    meta = report["meta"]
    assert meta["model"] == "UNet" and meta["image_size"] == 32 and meta["batch_size"] == 4
    note = next(r["note"] for r in rows if r["variant"] == "cache, 0 workers")
    assert "cache ready in" in note


def test_timed_rates_excludes_warmup() -> None:
    """Warm-up calls are not timed: a slow first call does not lower the rate."""
    calls = []

    def step() -> None:
        calls.append(1)
        if len(calls) == 1:
            __import__("time").sleep(0.3)

    rates = timed_rates(step, Timer(__import__("torch").device("cpu")), 1, 3, 2, images=4)
    assert len(calls) == 1 * 2 + 3 * 2 and len(rates) == 2
    assert min(rates) > 4 * 3 / 0.3  # the 0.3 s warm-up would have capped the rate at 40 img/s


@pytest.mark.slow
def test_compiled_model_is_compiled_in_every_timed_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``module.compile=true`` compiles the net in place, and ``copy.deepcopy`` drops that: the
    plain loop's and each inference variant's copy must be compiled again, or they time eager
    code under a "compile" label (measured on a GPU before the fix: "compiled" = eager speed).
    ``Module.compile`` is replaced by a recorder, so nothing is really compiled here."""
    from omegaconf import open_dict

    from segpets.bench import run_bench
    from tests.conftest import compose_config

    compiled: list[int] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(id(self)))
    monkeypatch.setenv("SEGPETS_CACHE_DIR", str(tmp_path / "cache"))
    overrides = [*TINY, "module.compile=true", "peak.dtypes=[fp32]", "data_bench.workers=[]"]
    cfg = compose_config("bench", overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    rows, _ = run_bench(cfg)

    inference = [r["variant"] for r in rows if r["benchmark"] == "inference"]
    assert inference == [
        f"{f} {p} compile" for f in ("NCHW", "channels_last") for p in ("fp32", "bf16")
    ]
    # the built net, the plain loop's copy and one copy per inference variant (ids of freed
    # copies may be reused, so they are counted, not compared)
    assert len(compiled) == 1 + 1 + len(inference)


@pytest.mark.slow
def test_lightning_overhead_script_reports_both_step_times() -> None:
    """scripts/lightning_overhead.py (cited in docs/performance.md) runs and measures a step
    through Trainer.fit as dearer than the bare loop on a model that does almost nothing."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "lightning_overhead.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--steps", "120"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("per step:"))
    lightning, plain = (float(x) for x in re.findall(r"([\d.]+) ms", line)[:2])
    assert 0 < plain < lightning, line
