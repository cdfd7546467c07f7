"""Typed values checked before any work (issue 23.7): each row of the bad-input matrix below is
a value that used to reach torch/Lightning/PIL unchecked (a traceback, exit 1, or a silently
different value). Now: one ``segpets: error:`` line naming the key and what is allowed, exit 2,
from the checks every entry point runs on its command line before Hydra starts
(:mod:`segpets.command.typed`, :func:`segpets.command.checks.check_typed`): nothing is created.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
import torch
from annotated_types import Ge

import segpets.eval
import segpets.export
import segpets.predict
import segpets.train
from segpets.command.checks import check_values
from segpets.command.typed import parameters, value_problem
from segpets.config_types import RGB, NumClasses, Workers, describe
from segpets.errors import ConfigError
from tests.conftest import assert_one_line_error, cli, compose_train

ENTRIES = {
    "train": (segpets.train.main, []),
    "eval": (segpets.eval.main, ["ckpt_path=x.ckpt"]),
    "predict": (segpets.predict.main, ["ckpt_path=x.ckpt", "input=x.png"]),
    "export": (segpets.export.main, ["ckpt_path=x.ckpt"]),
}
BINARY = r"must be 1 \(segpets segments one class, pet: one logit a pixel, sigmoid > 0\.5\)"
MONITOR = r"is not a metric logged while fitting \(did you mean '{}'\?\); logged: train/loss, "
MUST = r" must be "
# (command, overrides) -> pattern of the one error line
ROWS: dict[tuple[str, str], str] = {
    ("train", "data.num_workers=-1"): r"data\.num_workers" + MUST + r"an integer >= 0 or 'auto'",
    ("train", "data.mean=[0.5,0.5]"): (
        r"data\.mean must be a list of 3 numbers or null, got \[0\.5, 0\.5\]"
    ),
    ("train", "data.std=[0.2,0,0.2]"): r"data\.std must be a list of 3 numbers > 0 or null",
    ("train", "seed=abc"): r"^segpets: error: seed must be an integer or null, got 'abc'$",
    ("train", "trainer.max_epochs=abc"): r"trainer\.max_epochs" + MUST + r"an integer or null",
    ("train", "trainer.max_epochs=2.5"): r"trainer\.max_epochs" + MUST + r".*, got 2\.5",
    ("train", "trainer.precision=fp99"): r"trainer\.precision must be one of 64, 32, 16, .*'fp99'",
    ("train", "model=smp model.num_classes=2"): rf"model\.num_classes {BINARY}, got 2",
    ("train", "model.num_classes=3"): rf"model\.num_classes {BINARY}, got 3",
    ("train", "model=res34_unet model.num_classes=2"): rf"model\.num_classes {BINARY}, got 2",
    ("train", "+model.depth=5"): (
        r"model\.depth: segpets\.models\.UNet takes no argument 'depth' \(it takes "
        r"in_channels, num_classes, width, batch_norm\)"
    ),
    ("train", "data.image_size=48.5"): r"data\.image_size" + MUST + r".*> 0 and <= 4096, got 48\.5",
    ("train", "data.image_size=5000"): r"data\.image_size" + MUST + r".*<= 4096, got 5000",
    ("train", "data.border=foo"): r"data\.border must be one of 'pet', 'background', 'ignore'",
    ("train", "data.val_every=1"): r"data\.val_every must be an integer >= 2, got 1",
    ("train", "optimizer.lr=abc"): r"optimizer\.lr must be a number or a Tensor, got 'abc'",
    ("train", "scheduler.scheduler.mode=maximum"): r"scheduler\.scheduler\.mode" + MUST,
    ("train", "callbacks.model_checkpoint.monitor=val/dcie"): (
        r"callbacks\.model_checkpoint\.monitor: 'val/dcie' " + MONITOR.format("val/dice")
    ),
    ("train", "scheduler.monitor=val/los"): (
        r"scheduler\.monitor: 'val/los' " + MONITOR.format("val/loss")
    ),
    ("train", "optimized_metric=val/dic"): (
        r"optimized_metric: 'val/dic' " + MONITOR.format("val/dice")
    ),
    ("train", "trainer.max_epochs=1,2"): (
        r"trainer\.max_epochs=1,2: several values sweep, one run each, which needs -m "
        r"\(--multirun\)"
    ),
    ("train", "+callbacks.early_stopping.patience=3"): (
        r"callbacks\.early_stopping has no _target_: each entry of callbacks is a node naming "
        r"the class to build .*got \{'patience': 3\}"
    ),
    ("train", "+callbacks.early_stopping._target_=lightning.pytorch.callbacks.EarlyStopping"): (
        r"callbacks\.early_stopping\.monitor is missing: "
        r"lightning\.pytorch\.callbacks\.EarlyStopping needs it \(a string\)"
    ),
    ("train", "+logger.wandb={}"): r"logger\.wandb has no _target_",
    ("predict", "threshold=abc"): r"threshold must be a number > 0 and < 1, got 'abc'",
    ("predict", "threshold=1.5"): r"threshold must be a number > 0 and < 1, got 1\.5",
    ("predict", "batch_size=0"): r"batch_size must be an integer > 0, got 0",
    ("predict", "device=gpu"): r"device must be 'cpu' or 'cuda', got 'gpu'",
    ("export", "opset=3"): r"opset must be an integer >= 18 and <= 23, got 3",
    ("export", "opset=9"): r"opset must be an integer >= 18 and <= 23, got 9",
    ("export", "format=tflite"): (
        r"format must be one of 'onnx', 'torch_export', 'torchscript', got 'tflite'"
    ),
    ("eval", "eval.boundary_tolerance=1.5"): (
        r"eval\.boundary_tolerance must be an integer >= 0, got 1\.5"
    ),
    ("eval", "eval.worst_k=-1"): r"eval\.worst_k must be an integer >= 0, got -1",
    ("eval", "split=train"): r"split must be 'test' or 'val', got 'train'",
    ("eval", "data.num_workers=-1"): r"data\.num_workers" + MUST + r"an integer >= 0 or 'auto'",
    ("eval", "data.bad_samples=drop"): r"data\.bad_samples must be 'fail' or 'skip', got 'drop'",
}
if not torch.cuda.is_available():
    ROWS[("predict", "device=cuda")] = (
        r"device=cuda: PyTorch sees no CUDA device here \(torch\.cuda\.is_available\(\) is "
        r"False\); use device=cpu"
    )
    ROWS[("eval", "trainer.accelerator=gpu")] = r"trainer\.accelerator=gpu: PyTorch sees no CUDA"


@pytest.mark.parametrize("row", list(ROWS), ids=[" ".join(r) for r in ROWS])
def test_typed_value_row(row: tuple[str, str], tmp_path: Path, monkeypatch, capfd) -> None:
    """The entry point itself, in-process: one line, exit 2, nothing created."""
    command, overrides = row
    main, required = ENTRIES[command]
    code, err = cli(main, [*required, *overrides.split()], tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, ROWS[row])
    assert list(tmp_path.iterdir()) == []  # no run folder, no log: Hydra never started


def test_a_value_that_only_follows_another_is_not_the_one_named(tmp_path: Path) -> None:
    """``scheduler=cosine`` interpolates ``T_max: ${trainer.max_epochs}``, the resize steps
    ``${data.image_size}``: the key the user set is named, not the ones that follow it."""
    cfg = compose_train(["scheduler=cosine", "trainer.max_epochs=abc"], tmp_path)
    with pytest.raises(ConfigError, match=r"^trainer\.max_epochs must be"):
        check_values(cfg, "train")
    cfg = compose_train(["data.image_size=48.5"], tmp_path)
    with pytest.raises(ConfigError, match=r"^data\.image_size must be"):
        check_values(cfg, "train")


def test_train_checks_its_config_when_called_from_python(tmp_path: Path) -> None:
    """``segpets.train.train(cfg)`` (a notebook, a script) checks the same, before building."""
    cfg = compose_train(["model.num_classes=2", "trainer=cpu"], tmp_path)
    with pytest.raises(ConfigError, match=rf"^model\.num_classes {BINARY}, got 2$"):
        segpets.train.train(cfg)


@pytest.mark.parametrize(
    "annotation,value,ok",
    [
        (int, 3, True),
        (int, "3", False),  # the library would get the string
        (int, 3.0, False),
        (int, True, False),
        (float, 3, True),  # an int is a fine float
        (float | None, None, True),
        (RGB, [0.1, 0.2, 0.3], True),
        (RGB, (0.1, 0.2, 0.3), True),
        (RGB, [0.1, 0.2], False),
        (RGB, [0.1, "x", 0.3], False),
        (Workers, "auto", True),
        (Workers, "2", False),
        (NumClasses, 1, True),
        (NumClasses, 2, False),
        (list[int], [1, "2"], False),
    ],
)
def test_values_against_annotations(annotation, value, ok: bool) -> None:
    assert (value_problem(annotation, value, "key") is None) is ok


def test_descriptions_say_what_is_allowed() -> None:
    assert describe(Workers) == "an integer >= 0 or 'auto'"
    assert describe(RGB | None) == "a list of 3 numbers or null"
    assert describe(Annotated[int, Ge(2)] | None) == "an integer >= 2 or null"
    assert describe(int | float) == "a number"
    assert describe(tuple[int, int]) == "a list of 2 integers"


def test_parameters_follow_kwargs_into_base_classes() -> None:
    """``SyntheticPetDataModule(**kwargs)`` → ``PetDataModule`` → ``SegmentationDataModule``:
    every argument known, only the class's own required ones required."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from segpets.data import SyntheticPetDataModule

    params, open_kwargs = parameters(SyntheticPetDataModule)
    assert {"num_trainval", "root", "val_every", "image_size", "num_workers"} <= set(params)
    assert not open_kwargs
    assert params["train_transform"].required is False  # SegmentationDataModule's, passed on
    params, _ = parameters(TensorBoardLogger)
    assert params["save_dir"].required and not params["root_dir"].required


@pytest.mark.parametrize(
    "argv",
    [["-m", "trainer.max_epochs=1,2"], ["hparams_search=optuna", "optimizer.weight_decay=0,0.1"]],
)
def test_a_sweep_with_multirun_is_accepted(argv: list[str], tmp_path: Path, monkeypatch) -> None:
    """``-m``, or a config that asks for a multirun itself (``hparams_search=optuna``): a
    sweep's values are jobs, each checked, none refused."""
    from segpets.command.entry import check_command_line

    monkeypatch.chdir(tmp_path)
    assert check_command_line(argv, "train") is True
