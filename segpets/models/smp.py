"""segmentation_models_pytorch (smp) nets as a segpets model: any smp architecture with any
encoder smp accepts (its own and timm's, ``tu-<timm name>``), for any input H×W.

smp nets need H and W divisible by their encoder's output stride (32 for most); :class:`SmpNet`
pads the input to that multiple and crops the logits back, without any branch on sizes, so a
traced or exported net keeps H×W dynamic. smp is an optional dependency
(``pip install 'segpets[zoo]'``), imported when a zoo model is built.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segpets.config_types import NumClasses
from segpets.errors import ConfigError
from segpets.models import smp_weights

# Keys ``model.arch_kwargs`` may not set: segpets sets them, they change what the net takes or
# returns (aux_params adds a classification output, activation squashes the logits), or they
# load weights (timm's) from elsewhere than model.encoder_weights, also in a stored config.
RESERVED_KWARGS = (
    *("encoder_name", "encoder_weights", "in_channels", "classes", "activation", "aux_params"),
    *("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path"),
)
# Architectures that need their deepest feature map larger than 1 px: smp's PAN pools it three
# times by 2 in its feature pyramid attention (smp/decoders/pan/decoder.py, FPABlock).
MIN_DEEPEST_FEATURE = {"pan": 8}


def smp_module() -> Any:
    """``segmentation_models_pytorch``, or a one-line ``ConfigError`` saying how to get it."""
    try:
        import segmentation_models_pytorch as smp
    except ImportError as err:
        raise ConfigError(
            f"model=smp needs segmentation_models_pytorch ({err}); install it with "
            f"pip install 'segpets[zoo]' (included in segpets[dev])"
        ) from None
    return smp


def architecture(arch: str) -> type[nn.Module]:
    """smp's class for ``arch`` (case-insensitive: ``Unet``, ``fpn``, ``DeepLabV3Plus`` ...).

    Raises ``ConfigError`` naming ``model.arch`` and listing smp's architectures."""
    classes = smp_module().MODEL_ARCHITECTURES_MAPPING
    if not isinstance(arch, str) or arch.lower() not in classes:
        names = ", ".join(cls.__name__ for cls in classes.values())
        raise ConfigError(f"model.arch={arch!r} is not an smp architecture; choices: {names}")
    return classes[arch.lower()]


def check_encoder(name: str) -> None:
    """Raise ``ConfigError`` naming ``model.encoder_name`` unless smp accepts ``name``: one of
    its own encoders, or ``tu-<model>`` for a timm model (``tu-<model>.<tag>`` too)."""
    smp = smp_module()
    own = smp.encoders.get_encoder_names()
    if isinstance(name, str) and name.startswith("tu-"):
        import timm

        if timm.is_model(name[3:]):
            return
        close = difflib.get_close_matches(name[3:], timm.list_models(), n=3)
        hint = f"did you mean {', '.join('tu-' + c for c in close)}? " if close else ""
        raise ConfigError(
            f"model.encoder_name={name!r}: timm has no model {name[3:]!r}; {hint}"
            f"tu-<name> takes any of timm.list_models() ({len(timm.list_models())} names)"
        )
    if name in own:
        return
    if isinstance(name, str) and smp.encoders.is_equivalent_to_timm_universal(name):
        new = name.replace("timm-", "tu-" + ("tf_" if "mobilenetv3" in name else ""))
        raise ConfigError(
            f"model.encoder_name={name!r}: smp has deprecated its timm- encoders; use {new!r}"
        )
    close = difflib.get_close_matches(str(name), own, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(
        f"model.encoder_name={name!r} is not an smp encoder; {hint}smp's own encoders: "
        f"segmentation_models_pytorch.encoders.get_encoder_names() ({len(own)} names), or any "
        f"timm model as tu-<name> (timm.list_models())"
    )


def checked_kwargs(cls: type, encoder: str, arch_kwargs: dict[str, Any] | None) -> dict:
    """``arch_kwargs`` as keyword arguments of smp's ``cls``. ``ConfigError`` for a reserved
    key, or (smp's own encoders) a key the class does not take: smp passes extra keys on to
    ``tu-`` (timm) encoders only and would silently drop them for its own."""
    kwargs = dict(arch_kwargs or {})
    reserved = sorted(set(kwargs) & set(RESERVED_KWARGS))
    if reserved:
        raise ConfigError(
            f"model.arch_kwargs may not set {', '.join(reserved)}: the net's input, output "
            f"and weights come from model.encoder_name, model.encoder_weights, model.num_classes"
        )
    known = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    unknown = sorted(set(kwargs) - known)
    if unknown and not encoder.startswith("tu-"):
        raise ConfigError(
            f"model.arch_kwargs: {cls.__name__} takes no {', '.join(unknown)} (it takes "
            f"{', '.join(sorted(known - set(RESERVED_KWARGS)))}; other keys reach only tu- "
            f"encoders, as timm model arguments)"
        )
    return kwargs


def freeze_unused(net: nn.Module) -> list[str]:
    """Set ``requires_grad=False`` on the parameters ``net``'s forward never uses, and return
    their names. smp keeps some: an encoder's stages past ``encoder_depth`` (PSPNet: 3 of 5),
    EfficientNet's classifier conv. DDP refuses parameters that get no gradient unless told
    to search for them every step; frozen ones it skips. Found by one forward/backward of a
    zero image in eval mode (no randomness used, BatchNorm statistics untouched)."""
    was_training = net.training
    size = net.min_size
    net.eval()
    with torch.enable_grad():  # also when built under no_grad/inference_mode
        net(torch.zeros(1, 3, size, size)).sum().backward()
    unused = [name for name, p in net.named_parameters() if p.requires_grad and p.grad is None]
    for name, param in net.named_parameters():
        param.grad = None
        if name in unused:
            param.requires_grad_(False)
    net.train(was_training)
    return unused


def padded_size(size: Any, multiple: int, minimum: int) -> Any:
    """The smallest multiple of ``multiple`` that is >= ``size`` and >= ``minimum``. ``size``
    may be an int, a symbolic size (``torch.export``, the ONNX exporter: ``torch.sym_max``
    keeps H×W dynamic) or a traced size (a 0-d tensor under ``torch.jit.trace``: integer
    arithmetic and ``abs`` only, so tracing records the computation instead of a branch)."""
    rounded = (size + multiple - 1) // multiple * multiple
    if isinstance(rounded, torch.Tensor):
        return (rounded + minimum + abs(rounded - minimum)) // 2  # max(rounded, minimum)
    return torch.sym_max(rounded, minimum)


class SmpNet(nn.Module):
    """An smp segmentation net, (N, 3, H, W) normalised images → (N, 1, H, W) logits, any H×W.

    Args:
        arch: an smp architecture (``Unet``, ``UnetPlusPlus``, ``MAnet``, ``Linknet``, ``FPN``,
            ``PSPNet``, ``DeepLabV3``, ``DeepLabV3Plus``, ``PAN``, ``UPerNet``, ``Segformer``,
            ``DPT``), case-insensitive.
        encoder_name: an smp encoder (``resnet34``, ``mobilenet_v2``, ``efficientnet-b0``, ...)
            or ``tu-<timm model>``.
        encoder_weights: ``None`` (random init), a pretrained tag (``imagenet``; smp's others,
            e.g. ``ssl``, for its own encoders) or a local weights file
            (:mod:`segpets.models.smp_weights`).
        num_classes: output channels (1: binary logits).
        arch_kwargs: other keyword arguments of the smp class (``decoder_channels``,
            ``encoder_depth``, ...), passed unchanged.

    ``input_mean``/``input_std`` are the statistics the pretrained encoder weights were trained
    with (``None`` without weights). The net is ``smp.create_model(arch, encoder_name, ...)``'s,
    held as ``self.net``; inputs
    are zero-padded (the mean colour after normalisation) symmetrically to a multiple of
    ``self.stride`` (the encoder's output stride) and at least ``self.min_size``, and the
    logits cropped back. Raises ``ConfigError`` naming the key for an unknown architecture or
    encoder, weights that cannot be loaded, or arguments smp rejects.
    """

    min_input_size = 1  # any size: the input is padded to what the net needs

    def __init__(
        self,
        arch: str = "Unet",
        encoder_name: str = "resnet34",
        encoder_weights: str | None = None,
        num_classes: NumClasses = 1,
        arch_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        cls = architecture(arch)
        check_encoder(encoder_name)
        kwargs = checked_kwargs(cls, encoder_name, arch_kwargs)
        self.net = smp_weights.build_with_weights(
            cls, encoder_name, encoder_weights, {"classes": num_classes, **kwargs}
        )
        # the statistics the encoder's pretrained weights expect (None: from scratch)
        stats = (
            smp_weights.encoder_stats(encoder_name, str(encoder_weights)) if encoder_weights else {}
        )
        self.input_mean, self.input_std = stats.get("mean"), stats.get("std")
        self.stride = int(self.net.encoder.output_stride)
        self.min_size = self.stride * MIN_DEEPEST_FEATURE.get(cls.__name__.lower(), 1)
        self.unused = freeze_unused(self)

    @property
    def backbone(self) -> nn.Module:
        """The encoder (smp's ``net.encoder``): what ``module.encoder_lr``,
        ``module.freeze_encoder_bn`` and Lightning's ``BackboneFinetuning`` act on."""
        return self.net.encoder

    def extra_repr(self) -> str:
        return f"stride={self.stride}, min_size={self.min_size}, unused={len(self.unused)}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h = padded_size(h, self.stride, self.min_size) - h
        pad_w = padded_size(w, self.stride, self.min_size) - w
        top, left = pad_h // 2, pad_w // 2
        logits = self.net(F.pad(x, [left, pad_w - left, top, pad_h - top]))
        return logits[..., top : top + h, left : left + w]  # (N, classes, H, W)
