"""Re-measure the cheap numbers that README.md and docs/ state, and write them back.

    python scripts/doc_numbers.py               # measure, print each block; exit 1 if a doc differs
    python scripts/doc_numbers.py --write       # ... and rewrite the blocks in the docs
    python scripts/doc_numbers.py --only sweep  # one block: quickstart, eval or sweep

A block is the text between ``<!-- numbers:NAME -->`` and ``<!-- /numbers:NAME -->`` in README.md
or a page of docs/. Every block is made by the commands it names, run on the CPU in a fresh
temporary folder with a fresh ``SEGPETS_CACHE_DIR`` (so the generated set is made anew):

- ``quickstart`` (README.md): ``python -m segpets.train experiment=quickstart`` (= ``make train``),
  its per-image test Dice (deterministic on a CPU) and wall time;
- ``eval`` (docs/evaluation.md): ``python -m segpets.eval`` on the checkpoint that run tested,
  with ``eval.tta=hflip eval.full_res=true``: the printed metric table;
- ``sweep`` (docs/training.md): the Summaries example (``scripts/sweep_lr_wd.sh``), the table
  ``segpets.summarize`` prints.

"Differs" means a Dice-like value more than ``TOLERANCE`` from the one stated; wall times and
loads are written but never compared. tests/test_doc_numbers.py runs the same functions, so a
change that moves a stated number fails the test suite until the docs are rewritten.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 0.003  # Dice-like values: doc vs measurement
TIMEOUT_S = 4 * 3600  # per command: a busy shared machine can be 30x slower than a quiet one
BLOCKS = {"quickstart": "README.md", "eval": "docs/evaluation.md", "sweep": "docs/training.md"}
QUICKSTART = "python -m segpets.train experiment=quickstart"
EVAL = "python -m segpets.eval ckpt_path=$CKPT eval.tta=hflip eval.full_res=true"
# The Summaries example: 2 learning rates x 2 weight decays of the quickstart recipe at 32 px
SWEEP = (
    "LRS=1e-3,3e-3 WDS=0,1e-4 scripts/sweep_lr_wd.sh experiment=quickstart "
    "data.image_size=32 trainer.max_epochs=6"
)
EVAL_COLUMNS = ("eval-res", "full-res", "eval-res +hflip", "full-res +hflip")
EVAL_ROWS = ("dice", "dice_dataset", "iou", "pixel_accuracy", "boundary_f1")


# --- running the commands ------------------------------------------------------------------
def _env(cache: Path) -> dict[str, str]:
    """This interpreter first on PATH, this checkout importable, a fresh cache folder."""
    env = {**os.environ, "SEGPETS_CACHE_DIR": str(cache), "HYDRA_FULL_ERROR": "0"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHON"] = sys.executable
    return env


def _shell(command: str, work: Path) -> str:
    """Run a documented command line in ``work`` (``scripts/`` = this checkout's); its stdout.
    Raises ``RuntimeError`` with the end of its stderr when it fails."""
    line = command.replace("scripts/", f"{REPO}/scripts/").replace("python -m", '"$PYTHON" -m')
    work.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", line],
        cwd=work,
        env=_env(work / "cache"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"'{command}' exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.stdout


def _machine(start_load: float, wall: float) -> dict[str, object]:
    return {
        "wall_s": round(wall),
        "load": f"{start_load:.1f}-{os.getloadavg()[0]:.1f}",
        "cores": os.cpu_count(),
        "git": _git_revision(),
    }


def _git_revision() -> str:
    proc = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True
    )
    return proc.stdout.strip() or "unknown"


def measure_quickstart(work: Path) -> dict[str, object]:
    """``make train``'s run in ``work``: {dice, ckpt (the tested checkpoint), wall_s, load,
    cores, git}. Dice is the per-image test Dice from the run's ``test_metrics.json``."""
    load, start = os.getloadavg()[0], time.perf_counter()
    _shell(f"{QUICKSTART} callbacks.progress_bar.refresh_rate=0", work)
    wall = time.perf_counter() - start
    (record,) = work.glob("outputs/quickstart/runs/*/test_metrics.json")
    report = json.loads(record.read_text())
    result = {"dice": report["metrics"]["test/dice"], "ckpt": report["ckpt_path"]}
    return {**result, **_machine(load, wall)}


def measure_eval(work: Path, ckpt: str) -> dict[str, dict[str, float]]:
    """The eval example on ``ckpt``: {column: {metric: value}} as ``segpets.eval`` prints it."""
    command = EVAL.replace("$CKPT", f"'{ckpt}'") + " progress_bar=false"
    _shell(command, work)
    (record,) = work.glob("outputs/eval/runs/*/metrics.json")
    report = json.loads(record.read_text())
    table: dict[str, dict[str, float]] = {}
    for suffix, metrics in (("", report["metrics_without_tta"]), (" +hflip", report["metrics"])):
        for column, prefix in (("eval-res", "test/"), ("full-res", "test/full_res/")):
            table[column + suffix] = {
                name: metrics[prefix + name] for name in EVAL_ROWS if prefix + name in metrics
            }
    return table


def measure_sweep(work: Path) -> dict[str, object]:
    """The Summaries example in ``work``: {table (the Markdown lines segpets.summarize prints),
    rows ({overrides: (best_val_dice, test_dice)}), wall_s, load, cores, git}."""
    load, start = os.getloadavg()[0], time.perf_counter()
    out = _shell(f"{SWEEP} callbacks.progress_bar.refresh_rate=0", work)
    wall = time.perf_counter() - start
    table = [line for line in out.splitlines() if line.startswith("|")]
    return {"table": table, "rows": table_rows(table), **_machine(load, wall)}


# --- the blocks in the docs ----------------------------------------------------------------
def render(name: str, values: dict) -> str:
    """The Markdown of block ``name`` from measured ``values``."""
    if name == "quickstart":
        return (
            f"Measured: per-image test Dice **{values['dice']:.4f}** on the 60 generated test "
            f"images, the same on every run on a CPU; {values['wall_s']} s wall on "
            f"{values['cores']} CPU cores at load {values['load']} "
            f"(`{QUICKSTART}`, git {values['git']}; `python scripts/doc_numbers.py` re-measures)."
        )
    if name == "eval":
        head = "| metric | " + " | ".join(EVAL_COLUMNS) + " |"
        lines = ["```bash", QUICKSTART, EVAL, "```", "", head, "|---" * 5 + "|"]
        for row in EVAL_ROWS:
            cells = " | ".join(f"{values[c][row]:.4f}" for c in EVAL_COLUMNS)
            lines.append(f"| {row} | {cells} |")
        return "\n".join(lines)
    if name == "sweep":
        return "\n".join(
            [
                "```bash",
                SWEEP,
                "```",
                "",
                *values["table"],
                "",
                f"({values['wall_s']} s wall for the four runs and the summary on "
                f"{values['cores']} CPU cores at load {values['load']}, git {values['git']}; "
                "wall_s is each run's first to last TensorBoard event.)",
            ]
        )
    raise KeyError(name)


def stated(name: str, text: str | None = None) -> dict:
    """The values block ``name`` states now (parsed from its doc, or from ``text``)."""
    body = block(name, text)
    if name == "quickstart":
        return {"dice": float(re.search(r"test Dice \*\*([0-9.]+)\*\*", body).group(1))}
    if name == "eval":
        table: dict[str, dict[str, float]] = {c: {} for c in EVAL_COLUMNS}
        for line in body.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0] in EVAL_ROWS:
                for column, value in zip(EVAL_COLUMNS, cells[1:], strict=True):
                    table[column][cells[0]] = float(value)
        return table
    if name == "sweep":
        return {"command": SWEEP if SWEEP in body else None, "rows": table_rows(body.splitlines())}
    raise KeyError(name)


def table_rows(lines: list[str]) -> dict[str, tuple[float, float]]:
    """summarize's Markdown rows → {overrides: (best_val_dice, test_dice)}."""
    rows = {}
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and re.fullmatch(r"[0-9.]+", cells[2]):
            rows[cells[1]] = (float(cells[2]), float(cells[3]))
    return rows


def block(name: str, text: str | None = None) -> str:
    """The current text of block ``name`` in its doc (or in ``text``)."""
    text = (REPO / BLOCKS[name]).read_text() if text is None else text
    found = re.search(rf"<!-- numbers:{name} -->\n(.*?)\n<!-- /numbers:{name} -->", text, re.S)
    if not found:
        raise ValueError(f"{BLOCKS[name]}: no <!-- numbers:{name} --> block")
    return found.group(1)


def write(name: str, markdown: str) -> None:
    path = REPO / BLOCKS[name]
    text = path.read_text()
    start, end = f"<!-- numbers:{name} -->\n", f"\n<!-- /numbers:{name} -->"
    before, rest = text.split(start, 1)
    path.write_text(before + start + markdown + end + rest.split(end, 1)[1])


def differences(name: str, measured: dict, doc: dict) -> list[str]:
    """Where the stated Dice-like values are more than TOLERANCE from the measured ones."""
    pairs: list[tuple[str, float, float]] = []
    if name == "quickstart":
        pairs.append(("test Dice", measured["dice"], doc["dice"]))
    elif name == "eval":
        for column in EVAL_COLUMNS:
            for row in EVAL_ROWS:
                pairs.append((f"{row} {column}", measured[column][row], doc[column].get(row, -1)))
    elif name == "sweep":
        if doc["command"] is None:
            return [f"the command is not `{SWEEP}`"]
        if set(doc["rows"]) != set(measured["rows"]):
            return [f"rows {sorted(doc['rows'])} stated, {sorted(measured['rows'])} measured"]
        for key, (val, test) in measured["rows"].items():
            pairs += [(f"{key} best_val_dice", val, doc["rows"][key][0])]
            pairs += [(f"{key} test_dice", test, doc["rows"][key][1])]
    return [
        f"{label}: {got:.4f} measured, {want:.4f} stated"
        for label, got, want in pairs
        if abs(got - want) > TOLERANCE
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the blocks in the docs")
    parser.add_argument("--only", nargs="+", choices=list(BLOCKS), default=list(BLOCKS))
    parser.add_argument("--work", type=Path, help="run in this new folder and keep it")
    args = parser.parse_args()
    measured: dict[str, dict] = {}
    if args.work and args.work.exists():
        parser.error(f"--work: '{args.work}' exists; give a new folder")
    with tempfile.TemporaryDirectory(prefix="segpets-doc-numbers-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        if {"quickstart", "eval"} & set(args.only):
            measured["quickstart"] = measure_quickstart(work / "quickstart")
        if "eval" in args.only:
            measured["eval"] = measure_eval(work / "quickstart", measured["quickstart"]["ckpt"])
        if "sweep" in args.only:
            measured["sweep"] = measure_sweep(work / "sweep")
    stale = 0
    for name in args.only:
        markdown = render(name, measured[name])
        problems = differences(name, measured[name], stated(name))
        stale += bool(problems)
        print(f"--- {name} ({BLOCKS[name]}): {'; '.join(problems) or 'as stated'}\n{markdown}\n")
        if args.write:
            write(name, markdown)
    return 1 if stale and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
