"""Odd content in a checkpoint from elsewhere (issue 23.8) and exports of nets that give NaN
(issue 23.3): each is one ``segpets: error:`` line naming the file, exit 2, before anything is
built (or, for an export, before anything is written), and nothing is allocated beyond what
the file's own weights hold."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import segpets.eval
import segpets.export
import segpets.predict
import segpets.train
from segpets.checkpoints.states import check_training_state
from segpets.errors import ConfigError
from tests.conftest import TINY_SYNTHETIC, assert_one_line_error, cli, compose_config, compose_train
from tests.test_trust import config, entry_args, save_ckpt  # noqa: F401  (config: a fixture)


def set_key(section: str, key: str, value) -> Callable[[dict], None]:
    return lambda c: c[section].__setitem__(key, value)


def resize_to(side: int) -> Callable[[dict], None]:
    def change(c: dict) -> None:
        step = c["data"]["eval_transform"]["transforms"][0]
        assert step["_target_"] == "albumentations.Resize"
        step["height"] = step["width"] = side

    return change


# how the stored config is changed -> pattern of the one error line
ODD: dict[str, tuple[Callable[[dict], None], str]] = {
    "_partial_: true": (
        set_key("model", "_partial_", True),
        r"stored config key model\._partial_ is not allowed",
    ),
    "_recursive_ in data": (
        set_key("data", "_recursive_", False),
        r"stored config key data\._recursive_ is not allowed",
    ),
    "a '???' value": (
        set_key("model", "width", "???"),
        r"stored config value at model\.width is '\?\?\?' \(never set\)",
    ),
    "a width that is no integer": (
        set_key("model", "width", "wide"),
        r"stored model\.width must be an integer > 0, got 'wide'; refusing the file",
    ),
    "num_classes 2": (
        set_key("model", "num_classes", 2),
        r"stored model\.num_classes must be 1 \(segpets segments one class",
    ),
    "a 40000-px Resize": (
        resize_to(40_000),
        r"stored data\.eval_transform\.transforms\[0\]\.height is 40000 px, above the 4096 px",
    ),
    "a 40000-px data.image_size": (
        set_key("data", "image_size", 40_000),
        r"stored data\.image_size must be an integer > 0 and <= 4096, got 40000",
    ),
    "a billion generated images": (
        set_key("data", "num_trainval", 10**9),
        r"stored data\.num_trainval must be an integer >= 2 and <= 100000, got 1000000000",
    ),
    "a config wider": (
        set_key("model", "width", 64),
        r"its stored model config does not describe its weights \(net\.stem\.\S+: \[4, 3, 3, 3\] "
        r"in the file, \[64, 3, 3, 3\] built\)",
    ),
}


@pytest.mark.parametrize("row", list(ODD))
def test_predict_refuses_odd_stored_configs(row, config, tmp_path, monkeypatch, capfd):  # noqa: F811
    change, pattern = ODD[row]
    odd = copy.deepcopy(config)
    change(odd)
    ckpt = save_ckpt(tmp_path / "odd.ckpt", odd)
    args = entry_args(segpets.predict.main, ckpt, tmp_path)
    code, err = cli(
        segpets.predict.main, [*args, "progress_bar=false"], tmp_path, monkeypatch, capfd
    )
    line = assert_one_line_error(code, err, pattern)
    assert f"'{ckpt}'" in line
    assert not (tmp_path / "masks").exists()


@pytest.mark.parametrize("entry", [segpets.eval.main, segpets.export.main])
@pytest.mark.parametrize("row", ["_partial_: true", "a 40000-px Resize", "a config wider"])
def test_eval_and_export_refuse_them_too(entry, row, config, tmp_path, monkeypatch, capfd):  # noqa: F811
    change, pattern = ODD[row]
    odd = copy.deepcopy(config)
    change(odd)
    ckpt = save_ckpt(tmp_path / "odd.ckpt", odd)
    code, err = cli(entry, entry_args(entry, ckpt, tmp_path), tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, pattern)
    assert not (tmp_path / "model.onnx").exists()


# --- the training state a resume restores -------------------------------------------------
CHECKPOINT_STATE = "ModelCheckpoint{'monitor': 'val/dice', 'mode': 'max'}"
MODEL_CHECKPOINT = {"best_model_path": "", "best_model_score": None}
STATES: dict[str, tuple[dict, str]] = {
    "callbacks that are not a mapping": (
        {"callbacks": "garbage"},
        r"stored callbacks must be a mapping",
    ),
    "an RNG state that is a string": (
        {"callbacks": {"ExactResume": {"rng": "garbage"}}},
        r"stored callbacks\['ExactResume'\]\.rng must be a mapping, got 'garbage'",
    ),
    "RNG states of the wrong size": (
        {"callbacks": {"ExactResume": {"rng": {"torch": torch.zeros(3, dtype=torch.uint8)}}}},
        r"stored callbacks\['ExactResume'\]\.rng is not a set of RNG states \(RuntimeError",
    ),
    "best_k_models that is a number": (
        {"callbacks": {CHECKPOINT_STATE: {**MODEL_CHECKPOINT, "best_k_models": 5}}},
        r"\.best_k_models must be a mapping, got 5",
    ),
    "a checkpoint state without best_model_path": (
        {"callbacks": {CHECKPOINT_STATE: {"best_model_score": None}}},
        r"its stored state has no callbacks\[.*\]\.best_model_path",
    ),
    "a best score that is text": (
        {"callbacks": {"BestMetric{'monitor': 'val/dice', 'mode': 'max'}": {"best": "high"}}},
        r"\.best must be a number or null, got 'high'",
    ),
    "loops that are a list": ({"loops": [1, 2]}, r"stored loops must be a mapping, got \[1, 2\]"),
}


@pytest.mark.parametrize("row", list(STATES))
def test_malformed_training_state_is_one_line(row: str) -> None:
    state, pattern = STATES[row]
    rng_before = torch.get_rng_state()
    with pytest.raises(ConfigError, match=r"^ckpt_path: 'x': .*" + pattern):
        check_training_state(state, "ckpt_path: 'x'")
    assert torch.equal(torch.get_rng_state(), rng_before)  # a tried RNG state is undone


@pytest.mark.slow
def test_resume_refuses_a_malformed_state_before_fitting(tmp_path, monkeypatch, capfd) -> None:
    """A checkpoint of exactly this run's config whose RNG state is a string: ``train`` with
    ``ckpt_path=`` refuses it before fitting (Lightning would fail mid-restore)."""
    from segpets.command.build import build_module

    module = build_module(compose_train([*TINY_SYNTHETIC, "model.width=4"], tmp_path / "run"))
    ckpt = tmp_path / "last.ckpt"
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": {"config": module.hparams.config},
            "callbacks": {"ExactResume": {"rng": "garbage"}},
        },
        ckpt,
    )
    args = entry_args(segpets.train.main, ckpt, tmp_path)
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, r"stored callbacks\['ExactResume'\]\.rng must be a mapping")
    assert not list(tmp_path.glob("outputs/**/*.ckpt"))


def test_a_real_training_state_passes(tmp_path: Path) -> None:
    """What segpets' own callbacks and Lightning's write is accepted (and its RNG untouched)."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from segpets.callbacks.best_metric import BestMetric
    from segpets.callbacks.resume import collect_rng_states

    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val/dice", mode="max")
    checkpoint.best_k_models = {str(tmp_path / "a.ckpt"): torch.tensor(0.5)}
    plateau = [{"index": 0, "last_epoch": 1, "value": 0.3}]
    callbacks = {
        checkpoint.state_key: checkpoint.state_dict(),
        "ExactResume": {"rng": collect_rng_states(), "plateau": plateau},
        BestMetric("val/dice").state_key: BestMetric("val/dice").state_dict(),
        EarlyStopping("val/loss").state_key: EarlyStopping("val/loss").state_dict(),
    }
    check_training_state({"epoch": 1, "global_step": 4, "loops": {}, "callbacks": callbacks}, "x")


# --- exports of nets that give NaN ------------------------------------------------------
def nan_weights(path: Path) -> Path:
    saved = torch.load(path, weights_only=True)
    saved["state_dict"] = {
        k: v * float("nan") if v.is_floating_point() else v for k, v in saved["state_dict"].items()
    }
    torch.save(saved, path)
    return path


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_refuses_a_net_with_nan_weights(fmt, config, tmp_path, monkeypatch, capfd):  # noqa: F811
    ckpt = nan_weights(save_ckpt(tmp_path / "nan.ckpt", config))
    output = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    args = [f"ckpt_path={ckpt}", f"format={fmt}", f"output={output}"]
    code, err = cli(segpets.export.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(
        code,
        err,
        rf"ckpt_path: '{ckpt}': its net gives non-finite logits \(NaN/inf\) on random inputs "
        r"\(\d+ of its \d+ weight tensors hold NaN/inf\); nothing exported",
    )
    assert not output.exists()


@pytest.mark.slow
def test_an_export_giving_nan_is_removed(config, tmp_path, monkeypatch) -> None:  # noqa: F811
    """The net is finite but its export gives NaN (an exporter bug): the parity check fails in
    one line and the file it wrote is gone."""
    from segpets.export import export

    class NaNModel:
        def logits(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((len(x), 1, *x.shape[-2:]), float("nan"))

    monkeypatch.setattr(segpets.export, "load_model", lambda path, **kwargs: NaNModel())
    ckpt = save_ckpt(tmp_path / "tiny.ckpt", config)
    output = tmp_path / "model.onnx"
    cfg = compose_config("export", [f"ckpt_path={ckpt}", f"output={output}"])
    with pytest.raises(ConfigError, match=r"^output: the export '.*model\.onnx' gives non-finite"):
        export(cfg)
    assert not output.exists()
