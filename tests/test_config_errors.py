"""Every config error is one ``segpets: error:`` line naming the key, exit 2, before Hydra
creates a folder: found by walking every key of every entry point's config, plus rows for
what a user types (missing mandatory values, unset ``${oc.env:...}``, unknown keys, override
syntax, an image size the model cannot take, ``hydra.job.chdir=true``, a sweep's bad job)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf, open_dict

import segpets.eval
import segpets.export
import segpets.predict
import segpets.train
from segpets.command.checks import flatten
from segpets.command.entry import check_job
from segpets.errors import ConfigError
from tests.conftest import CONFIG_DIR, assert_one_line_error, cli, compose_config

ENTRIES = {  # config name -> (entry point, what makes its config complete)
    "train": (segpets.train.main, []),
    "eval": (segpets.eval.main, ["ckpt_path=x.ckpt"]),
    "predict": (segpets.predict.main, ["ckpt_path=x.ckpt", "input=x.png"]),
    "export": (segpets.export.main, ["ckpt_path=x.ckpt"]),
}
UNSET = "${oc.env:SEGPETS_SURELY_UNSET}"


def composed(name: str):
    return compose_config(name, ENTRIES[name][1], return_hydra_config=True)


def task_values(cfg) -> dict:
    """Every task key (no ``hydra.*``) and its value as written (interpolations unresolved)."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    raw.pop("hydra")
    return flatten(raw)


def task_keys(cfg) -> list[str]:
    return list(task_values(cfg))


# train's ~140 keys take ~6 s each way: with the slow tests; eval, predict, export stay fast
@pytest.mark.parametrize("value", ["???", UNSET], ids=["missing", "unset-env"])
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "train" else n for n in ENTRIES]
)
def test_every_key_that_cannot_resolve_is_named(name: str, value: str) -> None:
    """Each key of the config, in turn set to ``???`` or to an unset environment variable:
    the checks every CLI runs first (``segpets.cli.check_job``) name exactly that key."""
    cfg = composed(name)
    raw = task_values(cfg)
    assert len(raw) > (100 if name == "train" else 8)
    for key, original in raw.items():  # one key broken at a time, then put back
        with open_dict(cfg):
            OmegaConf.update(cfg, key, value, merge=False)
        with pytest.raises(ConfigError) as caught:
            check_job(cfg)
        assert str(caught.value).startswith(f"{key}: "), (key, str(caught.value))
        with open_dict(cfg):
            OmegaConf.update(cfg, key, original, merge=False)
    assert task_values(cfg) == raw


def first_key_of_each_section(name: str) -> list[str]:
    seen: dict[str, str] = {}
    for key in task_keys(composed(name)):
        if "[" not in key:  # list items cannot be set on Hydra's command line
            seen.setdefault(key.split(".")[0], key)
    return list(seen.values())


SAMPLED = [(n, k) for n in ENTRIES for k in first_key_of_each_section(n)]


@pytest.mark.parametrize(("name", "key"), SAMPLED, ids=[f"{n}:{k}" for n, k in SAMPLED])
def test_the_cli_reports_it_as_one_line(name, key, tmp_path, monkeypatch, capfd) -> None:
    """Through the command line (one key per config section): one line, exit 2, no folder."""
    main, complete = ENTRIES[name]
    code, err = cli(main, [*complete, f"{key}={UNSET}"], tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, "^segpets: error: " + re.escape(f"{key}: cannot resolve"))
    assert list(tmp_path.iterdir()) == []


UNDER_16 = r"data\.image_size=8 is below the 16 px that model segpets\.models\.UNet takes"
ROWS = {  # (entry, command line) -> pattern of the one error line
    ("eval", ()): r"ckpt_path: missing mandatory value; set ckpt_path=",
    ("predict", ("ckpt_path=x.ckpt",)): r"input: missing mandatory value; set input=",
    ("export", ()): r"ckpt_path: missing mandatory value",
    ("train", (f"paths.data_dir={UNSET}",)): r"paths\.data_dir: cannot resolve .*SURELY_UNSET",
    ("train", ("data.image_size=8",)): UNDER_16,
    ("train", ("model.widht=4",)): r"Could not override 'model\.widht'",
    ("train", ("optimizer.lr=[1",)): r"no viable alternative at input '\[1'",
    ("train", ("hydra.job.chdir=true",)): r"hydra\.job\.chdir=true is not supported",
    ("train", ("-m", "optimizer.lr=1e-3,0")): r"got 0 \(sweep job optimizer\.lr=0\)",
    ("train", ("optimized_metric=???",)): r"optimized_metric: missing mandatory value",
}


@pytest.mark.parametrize("row", list(ROWS), ids=[" ".join(r[1]) or r[0] for r in ROWS])
def test_config_error_row(row, tmp_path, monkeypatch, capfd) -> None:
    name, args = row
    code, err = cli(ENTRIES[name][0], list(args), tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, ROWS[row])
    assert list(tmp_path.iterdir()) == []  # nothing created: not even a run folder


MODELS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))


@pytest.mark.parametrize("option", MODELS)
def test_min_input_size_is_what_the_model_takes(option: str, tmp_path, monkeypatch, capfd) -> None:
    """Each model class's ``min_input_size`` (1 when absent) is honest: the net runs at that
    size and not one pixel below, and a smaller data.image_size is refused up front."""
    model_cfg = compose_config("train", [f"model={option}"]).model
    kwargs = {k: v for k, v in model_cfg.items() if k != "_target_"}
    if "width" in kwargs:
        kwargs["width"] = 4
    cls = get_class(model_cfg._target_)
    smallest = getattr(cls, "min_input_size", 1)
    net = cls(**kwargs).train()
    assert net(torch.randn(2, 3, smallest, smallest)).shape[-2:] == (smallest, smallest)
    if smallest == 1:
        return
    with pytest.raises(RuntimeError):
        net(torch.randn(2, 3, smallest - 1, smallest - 1))
    args = [f"model={option}", f"data.image_size={smallest - 1}"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, rf"data\.image_size={smallest - 1} is below the {smallest} px")
    assert not Path(tmp_path / "outputs").exists()
