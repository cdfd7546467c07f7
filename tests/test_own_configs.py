"""A user's own configs beside segpets' through Hydra's standard extension points:
``--config-dir DIR`` (relative or absolute), ``hydra.searchpath=[file://DIR]`` and
``hydra.searchpath=[pkg://their.pkg.configs]``. Their options in any group (model, data,
experiment, callbacks, logger) pass every segpets pre-check (search path, group choices,
composing and checking each job) and are listed in its "choices" messages; a folder or
search-path entry that does not exist or holds no configs is one line, exit 2.

The pre-checks run in-process (:func:`segpets.command.entry.check_command_line`, what every
entry point runs first); Hydra's own composition of the same command line runs in-process
too (``--cfg job``: composed and printed, nothing trained).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import segpets.eval
import segpets.train
from segpets.command.entry import check_command_line
from tests.conftest import cli

# A user's project: options of their own in five groups, two extending segpets' own.
OWN_CONFIGS = {
    "model/mine.yaml": "_target_: userpkg.nets.MyNet\nwidth: 4\n",
    "data/mine.yaml": "defaults:\n  - synthetic\n  - _self_\nnum_trainval: 20\nnum_test: 4\n",
    "callbacks/mine.yaml": (
        "defaults:\n  - default\n  - _self_\nearly_stopping:\n"
        "  _target_: lightning.pytorch.callbacks.EarlyStopping\n"
        "  monitor: val/dice\n  mode: max\n  patience: 3\n"
    ),
    "logger/mine.yaml": (
        "csv:\n  _target_: lightning.pytorch.loggers.CSVLogger\n"
        "  save_dir: ${paths.output_dir}\n  name: mine\n"
    ),
    "experiment/mine.yaml": (
        "# @package _global_\ndefaults:\n  - override /model: mine\n  - override /data: mine\n"
        "  - override /callbacks: mine\n  - override /logger: mine\n  - override /trainer: cpu\n"
        "task_name: mine\n"
    ),
}
GROUPS = ("model", "data", "callbacks", "logger", "experiment")


def write_configs(folder: Path) -> Path:
    for name, text in OWN_CONFIGS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    """tmp/project: conf/ (a config folder), userpkg/configs (the same configs in an
    importable package, on sys.path) and userpkg/nets.py (the net they name); cwd."""
    root = tmp_path / "project"
    write_configs(root / "conf")
    package = root / "userpkg"
    write_configs(package / "configs")
    (package / "__init__.py").write_text("")
    (package / "configs" / "__init__.py").write_text("")
    (root / "emptypkg").mkdir()
    (root / "emptypkg" / "__init__.py").write_text("")
    (package / "nets.py").write_text(
        "from torch import nn\n\n\nclass MyNet(nn.Conv2d):\n"
        "    def __init__(self, width: int = 4):\n        super().__init__(3, 1, 3, padding=1)\n"
    )
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.chdir(root)
    return root


def sources(root: Path) -> dict[str, list[str]]:
    """How each extension point adds the user's configs, as command-line arguments."""
    return {
        "--config-dir relative": ["--config-dir", "conf"],
        "--config-dir absolute": ["--config-dir", str(root / "conf")],
        "searchpath file://": [f"hydra.searchpath=[file://{root / 'conf'}]"],
        "searchpath pkg://": ["hydra.searchpath=[pkg://userpkg.configs]"],
    }


def precheck(argv: list[str], capsys, config_name: str = "train") -> tuple[int, str]:
    """(exit code, stderr) of segpets' pre-checks on ``argv``; fails on any warning (Hydra
    warns about missing search-path entries, which would print before segpets' line)."""
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            check_command_line(argv, config_name)
            code = 0
        except SystemExit as exit_:
            code = exit_.code
    err = capsys.readouterr().err
    assert not [str(w.message) for w in caught if "is not available" in str(w.message)]
    return code, err


def assert_one_line(code: int, err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("segpets: error: "), err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


SOURCES = [
    "--config-dir relative",
    "--config-dir absolute",
    "searchpath file://",
    "searchpath pkg://",
]


@pytest.mark.parametrize("source", SOURCES)
def test_own_options_pass_every_precheck(source, project, capsys) -> None:
    """Options of the user's own in every group, together, then their experiment (which
    picks them itself): the search path, the group choices, composing and checking the job."""
    for options in ([f"{g}=mine" for g in GROUPS if g != "experiment"], ["experiment=mine"]):
        code, err = precheck([*sources(project)[source], *options], capsys)
        assert code == 0, err


@pytest.mark.parametrize("source", SOURCES)
def test_choices_list_own_options(source, project, capsys) -> None:
    shipped = {"model": "unet", "data": "synthetic", "callbacks": "default"}
    shipped |= {"logger": "csv", "experiment": "quickstart"}
    for group in GROUPS:
        code, err = precheck([*sources(project)[source], f"{group}=nope"], capsys)
        line = assert_one_line(code, err, f"{group}=nope", "choices:")
        choices = line.split("choices: ")[1].split(", ")
        assert "mine" in choices and shipped[group] in choices, line  # theirs and segpets'


@pytest.mark.parametrize("source", SOURCES)
def test_hydra_composes_the_same_command_line(source, project, monkeypatch, capfd) -> None:
    """What the pre-checks accepted, Hydra composes: the experiment of the user's own folder,
    their net, data, callbacks and logger in one config."""
    args = [*sources(project)[source], "experiment=mine", "--cfg", "job"]
    code, err = cli(segpets.train.main, args, project, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    out = cli.stdout
    assert "_target_: userpkg.nets.MyNet" in out and "num_trainval: 20" in out
    assert "early_stopping:" in out and "name: mine" in out and "task_name: mine" in out


@pytest.mark.parametrize("config_dir", ["nowhere", "/nowhere/at/all"])
def test_config_dir_that_does_not_exist(config_dir, project, capsys) -> None:
    code, err = precheck(["--config-dir", config_dir, "model=mine"], capsys)
    assert_one_line(code, err, "--config-dir", str((project / config_dir).absolute()))


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ("file://{root}/nowhere", "'file://{root}/nowhere' is not a config folder or package"),
        ("file://nowhere", "'file://nowhere' is not a config folder or package"),
        ("pkg://no_such_package.configs", "'pkg://no_such_package.configs' is not a config"),
        ("pkg://emptypkg", "'pkg://emptypkg' holds no configs"),  # imports, but no YAML in it
        ("file://{root}/empty", "'file://{root}/empty' holds no configs"),
        ("fil://{root}/conf", "schema fil"),  # a typo in the scheme
    ],
)
def test_searchpath_entry_that_resolves_to_nothing(entry, named, project, capsys) -> None:
    (project / "empty").mkdir()
    entry, named = entry.format(root=project), named.format(root=project)
    code, err = precheck([f"hydra.searchpath=[{entry}]", "model=mine"], capsys)
    assert_one_line(code, err, "hydra.searchpath", named)


def test_searchpath_that_is_not_a_list(project, capsys) -> None:
    code, err = precheck([f"hydra.searchpath=file://{project / 'conf'}"], capsys)
    assert_one_line(code, err, "hydra.searchpath", "must be a list")


def test_searchpath_in_a_config_file_is_checked(project, capsys) -> None:
    """``hydra.searchpath`` set in the user's own primary config is checked the same way."""
    (project / "conf" / "mytrain.yaml").write_text(
        "defaults:\n  - train\n  - _self_\nhydra:\n  searchpath:\n    - file:///nowhere/conf\n"
    )
    code, err = precheck(["--config-dir", "conf", "--config-name", "mytrain"], capsys)
    assert_one_line(code, err, "hydra.searchpath", "'file:///nowhere/conf' is not a config")


def test_other_commands_take_own_config_folders(project, capsys) -> None:
    """eval/predict/export run the same pre-checks: their search path takes the folder too."""
    code, err = precheck(["--config-dir", "conf", "ckpt_path=x.ckpt"], capsys, "eval")
    assert code == 0, err
    code, err = precheck(["--config-dir", "nowhere", "ckpt_path=x.ckpt"], capsys, "eval")
    assert_one_line(code, err, "--config-dir")


def test_eval_reports_a_missing_config_dir_from_the_cli(project, monkeypatch, capfd) -> None:
    code, err = cli(
        segpets.eval.main,
        ["--config-dir", "nowhere", "ckpt_path=x.ckpt"],
        project,
        monkeypatch,
        capfd,
    )
    assert_one_line(code, err, "--config-dir", str(project / "nowhere"))
    assert not (project / "outputs").exists()
