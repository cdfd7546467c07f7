"""The analysis notebook runs top to bottom on the output of ``experiment=quickstart``."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO, run_segpets

NOTEBOOK = REPO / "notebooks" / "analyze_run.ipynb"
# experiment=quickstart, shrunk to seconds: a smaller set, a tiny net, 2 short epochs
FAST_QUICKSTART = [
    "experiment=quickstart",
    "data.num_trainval=40",
    "data.num_test=12",
    "data.image_size=32",
    "model.width=4",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    "callbacks.progress_bar.refresh_rate=0",
]


def test_notebook_is_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_notebook_runs_on_a_quickstart_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one thread: much faster on a busy 2-core box
    run_segpets("train", FAST_QUICKSTART, tmp_path, timeout=300)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    # the kernel inherits this process's environment
    monkeypatch.setenv("SEGPETS_RUN", str(tmp_path / "outputs" / "quickstart" / "runs"))
    NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/markdown", ""))
        for c in nb.cells
        for o in c.get("outputs", [])
    )
    assert "1 run(s) in" in text and "test Dice (per-image mean) = " in text
    assert "| Synthcat | cat | 6 |" in text and "| synthdog | dog | 6 |" in text  # 12 test images
    assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
