"""The README's "Your own data" and "Your own model" examples run as written (only the cache
folder and /tmp moved), on what a user has after ``make train``: the generated set."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, compose_train

USER_CACHE = "~/.cache/segpets"  # paths.cache_dir without SEGPETS_CACHE_DIR


def readme_block(section: str, language: str = "bash") -> str:
    text = (REPO / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(rf"```{language}\n(.*?)```", body, re.S).group(1)


def run_script(script: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env["PYTHONPATH"] = str(REPO)  # `python -m` puts the folder it runs in on the path itself
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_your_own_data_example_runs_as_written(isolated_cache: Path, tmp_path: Path) -> None:
    script = readme_block("Your own data")
    # the README's folder is the one `make train` (experiment=quickstart) generates
    quickstart = compose_train(["experiment=quickstart"], tmp_path)
    generated = Path(quickstart.data.root)
    assert generated.parent == isolated_cache  # SEGPETS_CACHE_DIR, else ~/.cache/segpets
    assert f"{USER_CACHE}/{generated.name} /tmp/my-pets" in script
    from segpets.data.synthetic import generate

    data = quickstart.data
    generate(generated, data.num_trainval, data.num_test, data.seed)
    script = script.replace(USER_CACHE, str(isolated_cache))
    script = script.replace("/tmp/my-pets", str(tmp_path / "my-pets"))
    script = script.replace("scripts/", f"{REPO}/scripts/")
    proc = run_script(script, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (evaluated,) = (tmp_path / "outputs" / "eval" / "runs").iterdir()
    report = json.loads((evaluated / "metrics.json").read_text())
    assert report["images"] == 6  # 10 % of the 60 pairs
    groups = (evaluated / "per_group.csv").read_text()
    assert "cat" in groups and "dog" in groups
    assert len(list((tmp_path / "my-pets" / "predicted").glob("*_mask.png"))) == 60


@pytest.mark.slow
def test_your_own_model_example_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "my_nets.py").write_text(readme_block("Your own model", "python"))
    proc = run_script(readme_block("Your own model"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (record,) = tmp_path.glob("outputs/train/runs/*/test_metrics.json")
    config = (record.parent / ".hydra" / "config.yaml").read_text()
    assert "_target_: my_nets.TinyNet" in config
    assert json.loads(record.read_text())["metrics"]["test/dice"] > 0.0
