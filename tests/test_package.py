"""segpets as an installed package: the wheel holds its configs and trains from any folder;
its configs compose with Hydra's plain API (no segpets import, nothing heavy, no network);
``python -m segpets`` lists the commands and ``--version`` works."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "segpets" / "configs"
# one quickstart epoch, shortened: fewer and smaller generated images, a few batches
QUICK = [
    "experiment=quickstart",
    "trainer.max_epochs=1",
    "data.num_trainval=20",
    "data.num_test=4",
    "data.image_size=32",
    "data.batch_size=8",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "logger=csv",
    "callbacks.val_images=null",
    "callbacks.progress_bar.refresh_rate=0",
]


def run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 300):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built offline (no build isolation: setuptools from the
    environment, the dev extra's) from a copy of its sources, so no build/ or *.egg-info is
    left in the checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "segpets", src / "segpets", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    build = [
        *pip,
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        "dist",
        str(src),
    ]
    proc = run(build, tmp)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (found,) = (tmp / "dist").glob("segpets-*.whl")
    return found


def test_wheel_holds_every_config(wheel: Path) -> None:
    shipped = {
        f"segpets/configs/{p.relative_to(CONFIGS).as_posix()}" for p in CONFIGS.rglob("*.yaml")
    }
    names = set(zipfile.ZipFile(wheel).namelist())
    assert len(shipped) > 40 and shipped <= names
    assert "segpets/configs/__init__.py" in names  # pkg://segpets.configs imports


@pytest.mark.slow
def test_installed_wheel_trains_from_another_folder(wheel: Path, tmp_path: Path) -> None:
    """Installed without dependencies into a folder of its own and used from another folder
    with only that folder on PYTHONPATH (this checkout cannot be imported): ``python -m
    segpets.train`` and the ``segpets-train`` console script each train one epoch."""
    target = tmp_path / "installed"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--no-deps"]
    proc = run([*pip, "--no-index", "--target", str(target), str(wheel)], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(target)}
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = run([sys.executable, "-c", "import segpets; print(segpets.__file__)"], work, env)
    assert Path(where.stdout.strip()).is_relative_to(target), where.stdout + where.stderr

    for name, command in {
        "module": [sys.executable, "-m", "segpets.train"],
        "script": [str(target / "bin" / "segpets-train")],
    }.items():
        proc = run([*command, *QUICK, f"hydra.run.dir={name}"], work, env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "test/dice (per-image mean Dice) = " in proc.stdout
        assert (work / name / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_python_m_segpets_lists_every_command_one_line_each() -> None:
    """Each command has one line, and the list is exactly the console scripts pyproject
    installs (``segpets-<command>``), each a module with a ``main``."""
    import importlib

    proc = run([sys.executable, "-m", "segpets"], REPO)
    assert proc.returncode == 0, proc.stderr
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    commands = {name.removeprefix("segpets-"): target for name, target in scripts.items()}
    lines = proc.stdout.splitlines()
    for command, target in commands.items():
        assert target == f"segpets.{command}:main"
        listed = [line for line in lines if line.split()[:1] == [command]]
        assert len(listed) == 1 and len(listed[0].split()) > 3, proc.stdout
        assert callable(importlib.import_module(f"segpets.{command}").main)
    listed = [line.split()[0] for line in lines if re.match(r"  \S", line)]
    assert sorted(listed) == sorted(commands)
    assert run([sys.executable, "-m", "segpets", "--help"], REPO).stdout == proc.stdout


@pytest.mark.slow
def test_python_m_segpets_version() -> None:
    from segpets import __version__

    for flag in ("--version", "-V"):
        proc = run([sys.executable, "-m", "segpets", flag], REPO)
        assert proc.returncode == 0 and proc.stdout == f"segpets {__version__}\n", proc.stderr
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert version["dynamic"]["version"] == {"attr": "segpets.__version__"}  # one source
    proc = run([sys.executable, "-m", "segpets", "--nope"], REPO)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("segpets: error: unknown argument '--nope'")


# Composes segpets' configs as a notebook or a script of the user's would: Hydra's API only,
# sockets refusing every connection, then reports which heavy modules composing imported.
PLAIN_COMPOSE = """
import importlib.util, socket, sys
from pathlib import Path

def offline(*args, **kwargs):
    raise OSError("no network while composing")

socket.socket.connect = socket.create_connection = socket.getaddrinfo = offline
from hydra import compose, initialize_config_dir, initialize_config_module
from hydra.utils import instantiate

assert "segpets" not in sys.modules
spec = importlib.util.find_spec("segpets")  # finds the package folder without importing it
folder = Path(spec.submodule_search_locations[0]) / "configs"
with initialize_config_dir(str(folder), version_base="1.3"):
    smp = compose("train", overrides=["experiment=smp_unet_r34"])  # ImageNet weights
with initialize_config_module("segpets.configs", version_base="1.3"):
    quick = compose("train", overrides=["experiment=quickstart", "data.num_workers=auto"])
heavy = ("torch", "lightning", "timm", "segmentation_models_pytorch", "albumentations")
loaded = [m for m in sys.modules if m.split(".")[0] in heavy or m.startswith("segpets.models")]
print("loaded while composing:", loaded)
print("segpets modules:", sorted(m for m in sys.modules if m.startswith("segpets")))
print("encoder_weights:", smp.model.encoder_weights, "mean:", smp.data.mean)
datamodule = instantiate(quick.data)
print("built:", type(datamodule).__module__, type(datamodule).__name__)
"""


@pytest.mark.slow
def test_configs_compose_with_hydras_plain_api(tmp_path: Path) -> None:
    proc = run([sys.executable, "-c", PLAIN_COMPOSE], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert lines["loaded while composing"] == "[]"
    assert lines["segpets modules"] == "['segpets', 'segpets.configs']"
    assert lines["encoder_weights"] == "imagenet mean: None"  # the net's own, when built
    assert lines["built"] == "segpets.data.synthetic SyntheticPetDataModule"
