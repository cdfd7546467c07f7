"""segpets.export: ONNX (onnxruntime) and TorchScript parity with PyTorch, dynamic shapes,
and predict from an exported model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segpets.data import load_rgb
from segpets.errors import ConfigError
from segpets.export import PARITY_ATOL, SUFFIXES, export
from segpets.inference.model import load_model
from segpets.predict import predict
from tests.conftest import ONNX_SLOW, TORCH_EXPORT_SLOW, compose_config

REAL = ["Abyssinian_5", "Abyssinian_100", "american_bulldog_100"]


def real_batch(mini_root: Path, size: tuple[int, int], mean, std) -> torch.Tensor:
    """Real photos resized to (H, W) and normalised like training: (3, 3, H, W)."""
    images = []
    for name in REAL:
        rgb = Image.fromarray(load_rgb(mini_root / "images" / f"{name}.jpg"))
        x = np.asarray(rgb.resize(size[::-1]), np.float32) / 255
        images.append(torch.from_numpy((x - mean) / std).permute(2, 0, 1).float())
    return torch.stack(images)


@pytest.mark.slow
def assert_parity(ckpt: Path, output: Path, mini_root: Path, odd_size: tuple[int, int]) -> None:
    """The export at ``output`` gives the checkpoint's logits (≤ PARITY_ATOL; the same masks
    but for logits within PARITY_ATOL of 0; masks that are not all one value) on random inputs
    at the traced 64 px and at ``odd_size``, and on real mini-set images at two sizes; its
    config (preprocessing) is the checkpoint's."""
    torch_model, exported = load_model(ckpt), load_model(output)
    assert exported.config == torch_model.config  # preprocessing travels with the export
    mean, std = np.array(exported.config.data.mean), np.array(exported.config.data.std)
    gen = torch.Generator().manual_seed(0)
    batches = [
        torch.randn(2, 3, 64, 64, generator=gen),  # the size it was traced at
        torch.randn(3, 3, *odd_size, generator=gen),  # other batch, H and W
        real_batch(mini_root, (64, 64), mean, std),
        real_batch(mini_root, (112, 144), mean, std),
    ]
    for x in batches:
        ref, got = torch_model.logits(x), exported.logits(x)
        assert got.shape == ref.shape == (len(x), 1, *x.shape[-2:])
        assert (got - ref).abs().max().item() <= PARITY_ATOL
        # identical masks, except where a logit lies within the tolerance of the threshold
        # (float arithmetic in another order may put it on either side)
        flipped = (got > 0) != (ref > 0)
        assert (ref[flipped].abs() <= PARITY_ATOL).all()
        assert 0 < (ref > 0).float().mean() < 1  # masks that can differ, not all one value


@pytest.mark.parametrize("fmt", [ONNX_SLOW, TORCH_EXPORT_SLOW, "torchscript"])
def test_export_parity_random_and_real(fmt: str, tiny_ckpt: Path, mini_root: Path, tmp_path):
    output = tmp_path / f"model{SUFFIXES[fmt]}"
    args = [f"ckpt_path={tiny_ckpt}", f"format={fmt}", f"output={output}"]
    assert export(compose_config("export", args)) == output
    assert_parity(tiny_ckpt, output, mini_root, odd_size=(96, 80))

    with pytest.raises(ConfigError, match="already exists"):
        export(compose_config("export", args))


def assert_predict_from_onnx_matches(
    ckpt: Path, mini_root: Path, tmp_path: Path, fmt: str = "onnx"
) -> None:
    """segpets.predict writes the same masks (not all one value) from an export of ``ckpt``
    (ONNX, or ``fmt``) as from ``ckpt`` itself, for real photos of other sizes than the
    training's."""
    onnx_file = tmp_path / f"model{SUFFIXES[fmt]}"
    export(compose_config("export", [f"ckpt_path={ckpt}", f"output={onnx_file}", f"format={fmt}"]))
    images = tmp_path / "images"
    images.mkdir()
    for name in REAL:  # predict resizes them to the checkpoint's size, then back
        (images / f"{name}.jpg").write_bytes((mini_root / "images" / f"{name}.jpg").read_bytes())
    for model, out in ((ckpt, "from_ckpt"), (onnx_file, "from_onnx")):
        args = [f"ckpt_path={model}", f"input={images}", f"output_dir={tmp_path / out}"]
        assert predict(compose_config("predict", [*args, "progress_bar=false"])) == []
    for name in REAL:
        a = np.asarray(Image.open(tmp_path / "from_ckpt" / f"{name}_mask.png"))
        b = np.asarray(Image.open(tmp_path / "from_onnx" / f"{name}_mask.png"))
        assert a.shape == b.shape and (a == b).all() and 0 < (a > 0).mean() < 1, name


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torch_export"])
def test_predict_from_export_matches_checkpoint(fmt, tiny_ckpt: Path, mini_root: Path, tmp_path):
    assert_predict_from_onnx_matches(tiny_ckpt, mini_root, tmp_path, fmt)


@pytest.mark.slow
def test_onnx_comes_from_the_torch_export_based_exporter(tiny_ckpt: Path, tmp_path) -> None:
    """PyTorch's recommended ONNX exporter (dynamo=True): its nodes carry the FX node they
    came from; opset 18; the weights inside the one file (no external .data file)."""
    import onnx

    output = tmp_path / "model.onnx"
    export(compose_config("export", [f"ckpt_path={tiny_ckpt}", f"output={output}"]))
    model = onnx.load(str(output))
    assert [p.version for p in model.opset_import if p.domain == ""] == [18]
    keys = {p.key for node in model.graph.node for p in node.metadata_props}
    assert "pkg.torch.onnx.fx_node" in keys
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    names = ([i.name for i in model.graph.input], [o.name for o in model.graph.output])
    assert names == (["image"], ["logits"])
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]


def test_torchscript_still_loads_with_segpets_deprecation_note(
    tiny_ckpt: Path, tmp_path, caplog
) -> None:
    """TorchScript is deprecated by PyTorch: segpets says so once, in its own words, and
    torch's FutureWarning from torch.jit.load is not left to the test suite (or the user)."""
    import warnings

    output = tmp_path / "model.pt"
    args = [f"ckpt_path={tiny_ckpt}", f"output={output}", "format=torchscript"]
    export(compose_config("export", args))
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(output)
    assert not [w for w in caught if "torch.jit" in str(w.message)]
    assert "TorchScript is deprecated by PyTorch" in caplog.text and "torch_export" in caplog.text
    assert model.logits(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_export_rejects_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="format must be"):
        export(compose_config("export", [f"ckpt_path={tmp_path}/x.ckpt", "format=tflite"]))
