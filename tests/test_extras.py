"""What a run does before its task (configs/extras, as lightning-hydra-template's) and early
stopping (configs/callbacks/early_stopping.yaml)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping

import segpets.train
from segpets.command.build import build_callbacks
from segpets.command.checks import check_values
from segpets.command.extras import extras, print_config_tree, save_config_tree
from segpets.errors import ConfigError
from segpets.train import train
from tests.conftest import TINY_SYNTHETIC, assert_one_line_error, cli, compose_train


def test_extras_defaults_as_lightning_hydra_template(tmp_path: Path) -> None:
    cfg = compose_train([], tmp_path)
    assert dict(cfg.extras) == {
        "print_config": True,
        "ignore_warnings": False,
        "enforce_tags": True,
    }


def test_config_tree_printed_in_order_and_saved_plain(tmp_path: Path, capsys) -> None:
    cfg = compose_train([*TINY_SYNTHETIC, "tags=[a]"], tmp_path)
    print_config_tree(cfg)
    printed = capsys.readouterr().out
    branches = re.findall(r"^[├└]── (\w+)$", printed, flags=re.M)
    assert branches[:11] == [
        "data", "model", "loss", "optimizer", "scheduler", "module",
        "callbacks", "logger", "trainer", "paths", "extras",
    ]  # fmt: skip
    assert set(branches) == set(cfg)  # and the rest (task_name, tags, seed, ...)
    assert "lr: 0.0005" in printed and "net: ${model}" in printed  # module: as written
    saved = save_config_tree(cfg, tmp_path)
    text = saved.read_text()
    assert saved.name == "config_tree.log" and "width: 4" in text
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text)  # no colours or other controls


def test_print_config_false_saves_nothing(tmp_path: Path) -> None:
    cfg = compose_train(["extras.print_config=false"], tmp_path)
    assert save_config_tree(cfg, tmp_path) is None
    assert not (tmp_path / "config_tree.log").exists()


def test_ignore_warnings(tmp_path: Path) -> None:
    cfg = compose_train(["extras.ignore_warnings=true", "extras.print_config=false"], tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        extras(cfg)
        warnings.warn("a library's warning", UserWarning, stacklevel=1)
    assert caught == []


def test_enforce_tags_refuses_an_untagged_run_where_no_one_can_answer(
    tmp_path: Path, monkeypatch, capfd
) -> None:
    """Not a terminal (tests, CI, nohup): one line, exit 2, nothing written."""
    code, err = cli(segpets.train.main, [*TINY_SYNTHETIC, "tags=[]"], tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, r"tags: empty, and extras\.enforce_tags=true")
    assert not (tmp_path / "outputs").exists()
    cfg = compose_train(["tags=[]", "extras.enforce_tags=false"], tmp_path)
    check_values(cfg)  # accepted when not enforced
    with pytest.raises(ConfigError, match="tags: empty"):
        check_values(compose_train(["tags=[]"], tmp_path))


def test_enforce_tags_asks_at_a_terminal(tmp_path: Path, monkeypatch) -> None:
    import rich.prompt

    import segpets.command.extras as module

    monkeypatch.setattr(module, "_can_ask", lambda: True)
    monkeypatch.setattr(rich.prompt.Prompt, "ask", classmethod(lambda cls, *a, **k: "x, y"))
    cfg = compose_train(["tags=[]", "extras.print_config=false"], tmp_path)
    extras(cfg)
    assert list(cfg.tags) == ["x", "y"]


def test_early_stopping_is_off_unless_chosen_and_watches_the_checkpoints_metric(
    tmp_path: Path,
) -> None:
    plain = compose_train([], tmp_path)
    assert "early_stopping" not in plain.callbacks
    cfg = compose_train(["callbacks=[default,early_stopping]"], tmp_path)
    (stopper,) = [c for c in build_callbacks(cfg.callbacks) if isinstance(c, EarlyStopping)]
    assert (stopper.monitor, stopper.mode) == ("val/dice", "max")
    assert cfg.callbacks.model_checkpoint.monitor == "val/dice"
    moved = compose_train(
        ["callbacks=[default,early_stopping]", "callbacks.model_checkpoint.monitor=val/loss"]
        + ["callbacks.model_checkpoint.mode=min"],
        tmp_path,
    )
    assert (moved.callbacks.early_stopping.monitor, moved.callbacks.early_stopping.mode) == (
        "val/loss",
        "min",
    )


def test_early_stopping_stops_a_run_that_does_not_improve(tmp_path: Path) -> None:
    """lr=1e-12: val/dice never moves; patience=1 ends a 6-epoch run after epoch 1."""
    args = [*TINY_SYNTHETIC, "trainer.max_epochs=6", "optimizer.lr=1e-12", "test=false"]
    args += ["callbacks=[default,early_stopping]", "callbacks.early_stopping.patience=1"]
    args += ["callbacks.progress_bar.refresh_rate=0", "logger=csv", "scheduler=none"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(compose_train(args, tmp_path))
    finally:
        torch.set_num_threads(threads)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1  # epochs 0 and 1 of 6
    (state,) = [v for k, v in last["callbacks"].items() if k.startswith("EarlyStopping")]
    assert state["stopped_epoch"] == 1 and state["wait_count"] == 1


def test_setting_an_unchosen_callback_says_how_to_choose_it(
    tmp_path: Path, monkeypatch, capfd
) -> None:
    args = [*TINY_SYNTHETIC, "callbacks.early_stopping.patience=3"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(
        code,
        err,
        r"callbacks\.early_stopping\.patience: 'early_stopping' is not among this run's "
        r"callbacks \(default\); choose it too: 'callbacks=\[default,early_stopping\]'",
    )
    assert not (tmp_path / "outputs").exists()
