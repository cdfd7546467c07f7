"""Model zoo end to end on the real mini set: a segpets.train run from a local encoder file
(its statistics recorded in the checkpoint, arch/encoder in TensorBoard's HPARAMS, eval with
TTA and full resolution reproducing the run's test Dice, resume), ONNX/TorchScript export
parity at sizes no stride divides, predict from an export, and 2-process DDP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

pytest.importorskip("segmentation_models_pytorch", reason="model zoo: pip install .[zoo]")

from segpets.checkpoints.load import load_checkpoint  # noqa: E402
from segpets.eval import evaluate  # noqa: E402
from segpets.export import SUFFIXES, export  # noqa: E402
from segpets.inference.model import load_model  # noqa: E402
from segpets.train import train  # noqa: E402
from tests.conftest import compose_config, compose_train, fit_steps  # noqa: E402
from tests.test_ddp import ddp_args, run_to_completion  # noqa: E402
from tests.test_export import (  # noqa: E402
    assert_parity,
    assert_predict_from_onnx_matches,
)
from tests.test_zoo import STATS, encoder_file  # noqa: E402

MINI_64 = ["data.image_size=64", "data.batch_size=8", "data.num_workers=0"]


@pytest.fixture(scope="module")
def zoo_run(mini_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One epoch of 3 batches: smp's Unet, resnet18 encoder from a local smp-hub-style file."""
    out = tmp_path_factory.mktemp("zoo-run")
    weights = encoder_file(out)
    overrides = [
        f"data.root={mini_root}",
        *MINI_64,
        "model=smp",
        "model.encoder_name=resnet18",
        f"model.encoder_weights={weights}",
        "model.arch_kwargs={decoder_channels:[64,32,16,16,8]}",
        "trainer=cpu",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "callbacks.progress_bar.refresh_rate=0",
    ]
    metrics = train(compose_train(overrides, out))
    return {"out": out, "overrides": overrides, "metrics": metrics, "weights": weights}


@pytest.mark.slow
def test_run_records_the_encoders_statistics_and_hparams(zoo_run: dict) -> None:
    config, _ = load_checkpoint(zoo_run["out"] / "checkpoints" / "last.ckpt")
    assert list(config.data.mean) == STATS["mean"] and list(config.data.std) == STATS["std"]
    assert config.model.encoder_weights == str(zoo_run["weights"])
    # what predict feeds the net: (pixel / 255 - mean) / std with the encoder's statistics
    model = load_model(zoo_run["out"] / "checkpoints" / "last.ckpt")
    pixel = np.full((8, 8, 3), 200, np.uint8)
    expected = (200 / 255 - np.array(STATS["mean"])) / np.array(STATS["std"])
    got = model.preprocess(pixel)[:, 0, 0].numpy()
    assert got == pytest.approx(expected, abs=1e-3)  # bilinear resize of a flat image

    events = EventAccumulator(str(zoo_run["out"] / "tensorboard")).Reload()
    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["model.arch"].string_value == "Unet"
    assert hparams["model.encoder_name"].string_value == "resnet18"


@pytest.mark.slow
def test_eval_reproduces_the_test_dice_with_tta_and_full_res(zoo_run: dict, mini_root: Path):
    recorded = json.loads((zoo_run["out"] / "test_metrics.json").read_text())
    args = [f"ckpt_path={recorded['ckpt_path']}", f"data.root={mini_root}", "split=test"]
    args += ["eval.tta=hflip", "eval.full_res=true", "eval.worst_k=2", "progress_bar=false"]
    zoo_run["weights"].rename(zoo_run["weights"].with_suffix(".moved"))  # not needed by eval
    try:
        out = zoo_run["out"] / "eval"
        evaluate(compose_config("eval", args), out)
    finally:
        zoo_run["weights"].with_suffix(".moved").rename(zoo_run["weights"])
    report = json.loads((out / "metrics.json").read_text())
    plain = report["metrics_without_tta"]["test/dice"]
    assert plain == pytest.approx(recorded["metrics"]["test/dice"], abs=1e-4)
    for key in ("test/dice", "test/full_res/dice", "test/boundary_f1"):
        assert 0.0 <= report["metrics"][key] <= 1.0
    assert report["tta"] == "hflip" and len(list((out / "worst").iterdir())) == 2


@pytest.mark.slow
def test_resume_continues_the_zoo_run(zoo_run: dict) -> None:
    last = zoo_run["out"] / "checkpoints" / "last.ckpt"
    again = zoo_run["out"] / "resumed"
    overrides = [o for o in zoo_run["overrides"] if not o.startswith("trainer.max_epochs")]
    cfg = compose_train([*overrides, "trainer.max_epochs=2", f"ckpt_path={last}"], again)
    train(cfg)
    resumed = torch.load(again / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 6  # 2 epochs of 3 batches


@pytest.fixture(scope="module", params=["Unet", "FPN"])
def zoo_ckpt(request, mini_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 steps of smp's ``arch`` with a resnet18 encoder at 64 px, head bias recentred so
    ~40 % of the pixels are pet (thresholded masks that can differ), saved by a Trainer."""
    out = tmp_path_factory.mktemp(f"zoo-{request.param}")
    overrides = [f"data.root={mini_root}", *MINI_64, "model=smp", "model.encoder_name=resnet18"]
    cfg = compose_train([*overrides, f"model.arch={request.param}"], out)
    trainer, module, logits = fit_steps(cfg, out)
    with torch.no_grad():
        module.net.net.segmentation_head[0].bias -= logits.quantile(0.6)
    trainer.save_checkpoint(out / "zoo.ckpt")
    return out / "zoo.ckpt"


@pytest.mark.slow
@pytest.mark.parametrize(  # each format once, each architecture at least once (test_export
    ("zoo_ckpt", "fmt"),  # covers every format on segpets' own nets)
    [("Unet", "onnx"), ("FPN", "torch_export"), ("FPN", "torchscript")],
    indirect=["zoo_ckpt"],
)
def test_zoo_export_parity(fmt: str, zoo_ckpt: Path, mini_root: Path, tmp_path: Path) -> None:
    output = tmp_path / f"model{SUFFIXES[fmt]}"
    export(compose_config("export", [f"ckpt_path={zoo_ckpt}", f"format={fmt}", f"output={output}"]))
    assert_parity(zoo_ckpt, output, mini_root, odd_size=(97, 131))  # padded inside, cropped


@pytest.mark.slow
@pytest.mark.parametrize("zoo_ckpt", ["FPN"], indirect=True)
def test_zoo_predict_from_onnx_matches_checkpoint(zoo_ckpt: Path, mini_root: Path, tmp_path):
    assert_predict_from_onnx_matches(zoo_ckpt, mini_root, tmp_path)


@pytest.mark.slow
def test_zoo_two_process_ddp(mini_root: Path, tmp_path: Path) -> None:
    """PSPNet leaves two of resnet18's stages unused: DDP (no find_unused_parameters) trains
    because SmpNet freezes them."""
    args = [a for a in ddp_args(mini_root, 2) if not a.startswith("model.")]
    args += ["model=smp", "model.arch=PSPNet", "model.encoder_name=resnet18"]
    proc = run_to_completion(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stdout + proc.stderr
    assert proc.stdout.count("test/dice (per-image mean Dice)") == 1
