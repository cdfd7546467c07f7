"""Checkpoints and exports are data: a stored config whose targets would run code is refused
with one line (exit 2) before anything is built, by every command that reads one.

Each crafted file would, if its config were instantiated, create a marker folder: directly
(``os.makedirs``) or by unpickling a payload through ``torch.load(weights_only=False)``.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import segpets.eval
import segpets.export
import segpets.predict
import segpets.train
from segpets.checkpoints.trust import (
    REBUILT_SECTIONS,
    TRUSTED_TARGETS,
    check_plain_data,
    check_stored_values,
)
from segpets.command.build import build_module
from segpets.errors import ConfigError
from segpets.export import SUFFIXES, export_net
from segpets.inference.model import _torchscript_extra
from tests.conftest import (
    CONFIG_DIR,
    ONNX_SLOW,
    TINY_SYNTHETIC,
    TORCH_EXPORT_SLOW,
    assert_one_line_error,
    cli,
    compose_train,
)
from tests.test_bad_inputs import RunsCode

UNTRUSTED = r"untrusted (target|interpolation) '"


@pytest.fixture
def config(tmp_path: Path) -> dict:
    """A real, resolved tiny training config (what segpets stores in a checkpoint)."""
    cfg = compose_train([*TINY_SYNTHETIC, "model.width=4"], tmp_path / "run")
    return OmegaConf.to_container(cfg, resolve=True)


def save_ckpt(path: Path, config: dict) -> Path:
    """A checkpoint holding a real UNet state dict and ``config``."""
    net_cfg = compose_train([*TINY_SYNTHETIC, "model.width=4"], path.parent)
    state = build_module(net_cfg, with_optimizer=False).state_dict()
    torch.save({"state_dict": state, "hyper_parameters": {"config": config}}, path)
    return path


def crafted(config: dict, where: str, marker: Path, tmp_path: Path) -> dict:
    """``config`` with one section replaced by a target that would create ``marker``."""
    evil = copy.deepcopy(config)
    makedirs = {"_target_": "os.makedirs", "name": str(marker)}
    if where == "model":
        evil["model"] = makedirs
    elif where == "model via torch.load(weights_only=False)":
        payload = tmp_path / "payload.pkl"
        torch.save({"x": RunsCode(marker)}, payload)
        evil["model"] = {"_target_": "torch.load", "f": str(payload), "weights_only": False}
    elif where == "nested eval transform":
        evil["data"]["eval_transform"]["transforms"][0] = makedirs
    elif where == "interpolated target":
        evil["data"]["evil"] = "os.makedirs"
        evil["model"] = {"_target_": "${data.evil}", "name": str(marker)}
    elif where == "loss":
        evil["loss"] = makedirs
    return evil


KINDS = [
    "model",
    "model via torch.load(weights_only=False)",
    "nested eval transform",
    "interpolated target",
    "loss",
]


def image(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "cat.png"
    Image.new("RGB", (40, 30), (120, 80, 60)).save(path)
    return path


def entry_args(entry, ckpt: Path, tmp_path: Path) -> list[str]:
    if entry is segpets.eval.main:
        return [f"ckpt_path={ckpt}"]
    if entry is segpets.export.main:
        return [f"ckpt_path={ckpt}", f"output={tmp_path / 'model.onnx'}"]
    if entry is segpets.predict.main:
        out = tmp_path / "masks"
        return [f"ckpt_path={ckpt}", f"input={image(tmp_path)}", f"output_dir={out}"]
    return [*TINY_SYNTHETIC, "model.width=4", f"ckpt_path={ckpt}"]  # a resume


ENTRIES = [segpets.eval.main, segpets.export.main, segpets.predict.main, segpets.train.main]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("entry", ENTRIES, ids=["eval", "export", "predict", "train-resume"])
def test_crafted_checkpoint_is_refused_before_anything_is_built(
    entry, kind, config, tmp_path, monkeypatch, capfd
):
    marker = tmp_path / "pwned"
    ckpt = save_ckpt(tmp_path / "evil.ckpt", crafted(config, kind, marker, tmp_path))
    code, err = cli(entry, entry_args(entry, ckpt, tmp_path), tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, re.escape(str(ckpt)) + ".*" + UNTRUSTED)
    assert not marker.exists()


def test_test_only_run_refuses_a_crafted_checkpoint(config, tmp_path, monkeypatch, capfd):
    marker = tmp_path / "pwned"
    ckpt = save_ckpt(tmp_path / "evil.ckpt", crafted(config, "model", marker, tmp_path))
    args = [*TINY_SYNTHETIC, "model.width=4", "train=false", f"ckpt_path={ckpt}"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, r"untrusted target 'os\.makedirs' at model\._target_")
    assert not marker.exists()


@pytest.mark.parametrize("fmt", [ONNX_SLOW, TORCH_EXPORT_SLOW, "torchscript"])
@pytest.mark.parametrize("kind", ["nested eval transform", "interpolated target"])
def test_crafted_export_is_refused_by_predict(fmt, kind, config, tmp_path, monkeypatch, capfd):
    """An export carries its config in its metadata; predict checks it like a checkpoint's,
    before the net or any transform is built."""
    marker = tmp_path / "pwned"
    evil = crafted(config, kind, marker, tmp_path)
    net = build_module(compose_train([*TINY_SYNTHETIC, "model.width=4"], tmp_path)).net.eval()
    export = tmp_path / f"model{SUFFIXES[fmt]}"
    export_net(net, evil, fmt, export)
    args = [f"ckpt_path={export}", f"input={image(tmp_path)}", f"output_dir={tmp_path / 'o'}"]
    code, err = cli(segpets.predict.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, re.escape(str(export)) + ".*" + UNTRUSTED)
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_export_writes_only_the_checked_sections(config, tmp_path, monkeypatch, capfd):
    """What segpets.export embeds is the trusted subset, not the whole stored config."""
    ckpt = save_ckpt(tmp_path / "good.ckpt", config)
    out = tmp_path / "model.pt"
    args = [f"ckpt_path={ckpt}", "format=torchscript", f"output={out}"]
    code, err = cli(segpets.export.main, args, tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    embedded = json.loads(_torchscript_extra(out))
    assert set(embedded) == {*REBUILT_SECTIONS, "trainer", "module"}
    assert embedded["trainer"] == {"precision": config["trainer"]["precision"]}
    assert embedded["model"] == config["model"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override",
    [f"{g}={o}" for g in ("model", "loss", "data", "experiment") for o in options(g)],
)
def test_every_shipped_config_is_trusted(override: str, tmp_path: Path) -> None:
    """The allowlist covers what every shipped model/loss/data option and experiment
    builds, so a checkpoint of any of them can be evaluated, exported and predicted with."""
    cfg = compose_train([override], tmp_path)
    if cfg.model.get("encoder_weights") == "imagenet":
        cfg.model.encoder_weights = None  # offline: smp's statistics need the hub
    if override == "data=folder":  # a trained checkpoint holds its folders, never '???'
        cfg.data.images, cfg.data.masks = "images", "masks"
    config = OmegaConf.to_container(cfg, resolve=True)
    for section in REBUILT_SECTIONS:
        check_plain_data(config[section], section, "test")
        check_stored_values(config[section], section, "test")


def test_every_trusted_target_exists() -> None:
    from hydra.utils import get_class

    for target in TRUSTED_TARGETS:
        assert isinstance(get_class(target), type), target


def test_non_plain_values_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"at model\.width is a Tensor, not plain data"):
        check_plain_data({"width": torch.ones(1)}, "model", "x")
    with pytest.raises(ConfigError, match=r"untrusted interpolation '\$\{oc\.env:HOME\}'"):
        check_plain_data({"root": "${oc.env:HOME}"}, "data", "x")
