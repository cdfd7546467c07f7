"""The README's "Your own data" example runs as written (only ../shared and /tmp moved)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MINI_DATA, REPO


def readme_block(section: str) -> str:
    text = (REPO / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1]
    return re.search(r"```bash\n(.*?)```", body, re.S).group(1)


@pytest.mark.slow
def test_your_own_data_example_runs_as_written(mini_root: Path, tmp_path: Path) -> None:
    script = readme_block("Your own data")
    assert "../shared/data/oxford-pet-mini" in script and "/tmp/my-pets" in script
    script = script.replace("../shared/data/oxford-pet-mini", str(MINI_DATA))
    script = script.replace("/tmp/my-pets", str(tmp_path / "my-pets"))
    script = script.replace("scripts/", f"{REPO}/scripts/")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (evaluated,) = (tmp_path / "outputs" / "eval" / "runs").iterdir()
    report = json.loads((evaluated / "metrics.json").read_text())
    assert report["images"] == 6  # 10 % of the 60 pairs
    assert (evaluated / "per_group.csv").is_file()
    assert len(list((tmp_path / "my-pets" / "predicted").glob("*_mask.png"))) == 60
