"""Every option of every config group composes with the main config, and builds."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
from hydra.utils import instantiate

from segpets.command.build import build_callbacks, build_module
from segpets.command.checks import check_values
from segpets.command.loggers import build_loggers
from tests.conftest import CONFIG_DIR, compose_train

GROUPS = [
    "data",
    "model",
    "loss",
    "optimizer",
    "scheduler",
    "trainer",
    "callbacks",
    "logger",
    "experiment",
    "debug",
    "extras",
]
OPTIONS = [
    (group, path.stem) for group in GROUPS for path in sorted((CONFIG_DIR / group).glob("*.yaml"))
]


def test_every_group_has_options() -> None:
    found = {g for g, _ in OPTIONS}
    assert found == set(GROUPS)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_builds(group: str, option: str, tmp_path: Path) -> None:
    cfg = compose_train([f"{group}={option}"], tmp_path)
    # then values set as the command line's overrides would set them (composing once)
    cfg.paths.log_dir = str(tmp_path)  # an MLflow store: there
    if (group, option) == ("data", "folder"):  # its two folders are mandatory (???)
        cfg.data.images = cfg.data.masks = str(tmp_path)
    if group != "model" and "width" in cfg.model:  # experiments may pick a net without a width
        cfg.model.width = 4
    if cfg.model.get("encoder_weights") == "imagenet":  # offline here; tests/test_experiments.py
        cfg.model.encoder_weights = None  # loads a local weights file instead
    check_values(cfg, "train")  # no typed check (segpets.command.typed) refuses a shipped option
    if group not in ("experiment", "debug"):  # those two are @package _global_
        assert group in cfg
    if group in ("model", "loss", "optimizer", "scheduler", "experiment", "debug"):
        module = build_module(cfg)
        module.trainer = None
        assert module.configure_optimizers() is not None
    elif group == "callbacks":
        assert all(isinstance(c, L.Callback) for c in build_callbacks(cfg.callbacks))
    elif group == "logger":
        build_loggers(cfg.logger)
    elif group == "data":
        assert instantiate(cfg.data).image_size > 0
    elif group == "trainer" and option in ("default", "cpu"):
        instantiate(cfg.trainer, accelerator="cpu", logger=False)


def test_precision_is_overridable(tmp_path: Path) -> None:
    cfg = compose_train(["trainer=cpu", "trainer.precision=bf16-mixed"], tmp_path)
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.precision == "bf16-mixed"


def test_cosine_scheduler_follows_max_epochs(tmp_path: Path) -> None:
    cfg = compose_train(["scheduler=cosine", "trainer.max_epochs=7"], tmp_path)
    assert cfg.scheduler.scheduler.T_max == 7


@pytest.mark.parametrize(("trainer", "devices", "workers"), [("gpu", 1, 15), ("ddp", 4, 3)])
def test_gpu_trainers_bring_loader_defaults(trainer, devices, workers, tmp_path, monkeypatch):
    """trainer=gpu/ddp: a worker per spare CPU (per process: Lightning's
    suggested_max_num_workers for the trainer's devices), persistent workers, pinned memory,
    the cache, and (gpu) bf16 + channels_last — unless the command line says otherwise. 16
    usable CPUs are pretended."""
    from types import SimpleNamespace

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    cfg = compose_train([f"trainer={trainer}", f"trainer.devices={devices}"], tmp_path)
    data = cfg.data
    assert (data.num_workers, data.persistent_workers, data.pin_memory, data.cache) == (
        "auto", True, True, True,
    )  # fmt: skip
    datamodule = instantiate(data, root=str(tmp_path))
    datamodule.trainer = SimpleNamespace(num_devices=devices)  # what Lightning resolved
    assert datamodule.loader_workers() == workers
    assert cfg.trainer.accelerator == "gpu" and "max_epochs" in cfg.trainer
    if trainer == "gpu":
        assert cfg.trainer.precision == "bf16-mixed" and cfg.module.channels_last
    mine = compose_train([f"trainer={trainer}", "data.num_workers=2", "data.cache=false"], tmp_path)
    assert (mine.data.num_workers, mine.data.cache) == (2, False)
    plain = compose_train(["trainer=cpu"], tmp_path)
    assert not plain.data.cache and not plain.data.pin_memory


def _recipe_rows() -> list[tuple[str, str, list[str]]]:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "recipe_table", Path(__file__).parents[1] / "scripts" / "recipe_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [(d, n, o) for d, rows in module.ROWS.items() for n, (_, o) in rows.items()]


@pytest.mark.parametrize(("device", "name", "overrides"), _recipe_rows())
def test_recipe_table_rows_compose(device, name, overrides, tmp_path: Path) -> None:
    """Every command scripts/recipe_table.py runs composes with today's configs."""
    cfg = compose_train([*overrides, "data.root=../shared/data/oxford-pet-24"], tmp_path)
    assert cfg.task_name == name if name != "quickstart" else cfg.data.root.endswith("pet-24")


@pytest.mark.parametrize("overrides", [[], ["trainer=gpu"], ["model=smp"]])
def test_config_resolves_whole(overrides, tmp_path: Path) -> None:
    """`python -m segpets.train --cfg job --resolve` (OmegaConf.resolve) works, and the module
    node holds the nets' own config (one object, one node)."""
    from omegaconf import OmegaConf

    cfg = compose_train(overrides, tmp_path)
    OmegaConf.resolve(cfg)
    assert cfg.data.mean is None and cfg.module.net == cfg.model and cfg.module.loss == cfg.loss
