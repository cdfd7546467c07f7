"""Fast paths change speed, not results: same weights give the same logits within a stated
tolerance (the tolerances are documented in docs/performance.md).

- channels_last, fp32: rtol 1e-4, atol 1e-5 (only the summation order differs);
- bf16 autocast: max |Δlogit| ≤ 5 % of max |logit| and ≥ 99 % of pixels keep their class
  (bf16 keeps 8 mantissa bits, ~0.4 % relative error per op).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segpets.command.build import build_module
from tests.conftest import compose_train

MODELS = {
    "unet_bn": ["model=unet", "model.width=8", "model.batch_norm=true"],
    "res34_unet": ["model=res34_unet", "model.decoder_channels=[32,16,16,16]"],
    "smp_fpn": ["model=smp", "model.arch=FPN", "model.encoder_name=resnet18"],
}


def module(overrides: list[str], tmp_path: Path):
    torch.manual_seed(0)
    return build_module(compose_train(overrides, tmp_path), with_optimizer=False).eval()


def pair(overrides: list[str], tmp_path: Path, **fast: bool):
    """(reference module, module with the fast path) sharing one set of weights, eval mode."""
    ref = module(overrides, tmp_path)
    flags = [f"module.{key}={str(value).lower()}" for key, value in fast.items()]
    fast_module = build_module(compose_train(overrides + flags, tmp_path), with_optimizer=False)
    fast_module.load_state_dict(ref.state_dict())
    return ref, fast_module.eval()


@pytest.mark.parametrize("model", MODELS)
def test_channels_last_same_logits(model: str, tmp_path: Path) -> None:
    ref, fast = pair(MODELS[model], tmp_path, channels_last=True)
    conv = next(m for m in fast.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected, got = ref(x), fast(x)
    assert got.shape == expected.shape == (2, 1, 64, 64)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model", MODELS)
def test_bf16_autocast_within_tolerance(model: str, tmp_path: Path) -> None:
    ref = module(MODELS[model], tmp_path)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = ref(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = ref(x)
    assert got.dtype == torch.bfloat16  # autocast really ran the convs in bf16
    diff = (got.float() - expected).abs().max()
    assert diff <= 0.05 * expected.abs().max()
    assert ((got > 0) == (expected > 0)).float().mean() >= 0.99


def test_bf16_mixed_training_step_matches_fp32_loss(tmp_path: Path) -> None:
    """Lightning's bf16-mixed autocasts the step; the loss is still computed in fp32."""
    ref = module(MODELS["unet_bn"], tmp_path)
    batch = {"image": torch.randn(4, 3, 64, 64), "mask": (torch.rand(4, 1, 64, 64) > 0.5).float()}
    ref.train()
    expected = ref.loss(ref(batch["image"]), batch["mask"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ref.loss(ref(batch["image"]), batch["mask"])
    assert got.dtype == torch.float32
    assert abs(got.item() - expected.item()) <= 0.01 * expected.item()


@pytest.mark.parametrize("model", ["unet_bn", "smp_fpn"])
def test_compile_is_in_place_and_keeps_checkpoint_keys(model: str, tmp_path: Path) -> None:
    """module.compile=true compiles the net in place (lazily: the first forward compiles), so
    checkpoints load with or without it. Compiled-vs-eager logits are measured by
    ``segpets.bench inference.compile=true``, not here (inductor takes ~45 s CPU per shape)."""
    ref, fast = pair(MODELS[model], tmp_path, compile=True)
    assert fast.net._compiled_call_impl is not None
    assert ref.net._compiled_call_impl is None
    assert fast.state_dict().keys() == ref.state_dict().keys()


def test_fast_paths_are_module_arguments_kept_in_checkpoints(tmp_path: Path) -> None:
    cfg = compose_train(
        ["model.width=4", "module.channels_last=true", "module.compile=false"], tmp_path
    )
    module = build_module(cfg, with_optimizer=False)
    assert module.net.stem[0].out_channels == 4  # model.width reaches UNet
    assert module.channels_last and module.hparams["config"]["module"]["channels_last"] is True
