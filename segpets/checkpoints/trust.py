"""Checkpoints and exports are data: what segpets rebuilds from them is checked first.

A checkpoint (or the config an ONNX/TorchScript export carries) stores the training config;
eval, predict, export and resume rebuild the net, loss and preprocessing from its ``model``,
``loss`` and ``data`` sections with ``hydra.utils.instantiate``, which imports and calls
whatever a ``_target_`` names. So before anything is built, :func:`trusted_config` walks those
sections (nested dicts and lists included) and refuses, with a one-line :class:`ConfigError`:

* a ``_target_`` that is not in :data:`TRUSTED_TARGETS` (segpets' own models, loss and data
  modules, and the albumentations transforms segpets' configs use);
* any ``${...}`` interpolation: segpets stores configs resolved, and resolving one from a file
  would let the file pick a target (or read the environment) when it is rebuilt;
* values that are not plain data (str, int, float, bool, None, lists, dicts with str keys);
* Hydra's other special keys (``_partial_``, ``_args_``, ``_recursive_``, ``_convert_``: they
  change what building returns) and ``???`` (a value left unset);
* values the constructors they reach cannot take (:mod:`segpets.command.typed`: the annotations
  of segpets' nets and data modules, albumentations' transforms): e.g. ``num_classes: 2``;
* image sizes above :data:`segpets.config_types.MAX_IMAGE_SIDE` (a ``Resize`` to 40000 px made
  predict allocate 4.8 GB for one image).

Only those sections (plus ``trainer.precision``, checked against Lightning's choices, and
``module.channels_last``, a bool) are returned, so no other part of a stored config can ever
be instantiated by mistake.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from segpets.command.typed import target_problems
from segpets.config_types import MAX_IMAGE_SIDE
from segpets.errors import ConfigError

# Everything segpets' configs (configs/model, configs/loss, configs/data) build; a test checks
# that every option of those groups (and every experiment) needs nothing else.
TRUSTED_TARGETS = frozenset(
    {
        "segpets.models.UNet",
        "segpets.models.ResNet34UNet",
        # smp nets: arch/encoder are strings SmpNet checks against smp's and timm's registries,
        # so a stored config picks among smp's nets but never names a class of its own
        "segpets.models.SmpNet",
        "segpets.losses.BCEDiceLoss",
        "segpets.data.PetDataModule",
        "segpets.data.SyntheticPetDataModule",
        "segpets.data.FolderDataModule",
        "albumentations.Compose",
        "albumentations.Resize",
        "albumentations.RandomResizedCrop",
        "albumentations.HorizontalFlip",
        "albumentations.Affine",
        "albumentations.ColorJitter",
        "albumentations.Normalize",
        "albumentations.ToTensorV2",
    }
)
REBUILT_SECTIONS = ("model", "loss", "data")  # what eval/predict/export instantiate
PRECISIONS = ("16-true", "16-mixed", "bf16-true", "bf16-mixed", "32-true", "64-true")
PLAIN = (str, int, float, bool, type(None))
HYDRA_KEYS = ("_partial_", "_args_", "_recursive_", "_convert_")  # _target_ is checked apart
SIZE_KEYS = ("image_size", "height", "width", "size", "max_size", "min_size")  # pixels


def trusted_config(
    stored: Any, source: str, need: tuple[str, ...] = REBUILT_SECTIONS
) -> DictConfig:
    """``{model, loss, data, trainer: {precision}, module: {channels_last}}`` of a stored
    training config, after every check above; ``source`` names the file in the error (e.g.
    ``ckpt_path: '/x.ckpt'``).

    Raises ``ConfigError`` when ``stored`` lacks a section in ``need`` ("not a segpets ...")
    or anything in the rebuilt sections is untrusted. Nothing is resolved or imported here.
    """
    if not isinstance(stored, dict) or any(not isinstance(stored.get(k), dict) for k in need):
        raise ConfigError(f"{source} is not a segpets training checkpoint (no {'/'.join(need)})")
    subset = {key: stored[key] for key in REBUILT_SECTIONS if key in stored}
    for key, section in subset.items():
        check_plain_data(section, key, source)
    for key, section in subset.items():
        check_stored_values(section, key, source)
    trainer = stored.get("trainer") if isinstance(stored.get("trainer"), dict) else {}
    precision = trainer.get("precision", "32-true")
    if precision not in PRECISIONS:
        raise ConfigError(
            f"{source}: stored trainer.precision {precision!r} is none of {', '.join(PRECISIONS)}"
        )
    module = stored.get("module") if isinstance(stored.get("module"), dict) else {}
    flags = {"channels_last": module.get("channels_last", False)}
    if not isinstance(flags["channels_last"], bool):
        raise ConfigError(f"{source}: stored module.channels_last is not true/false")
    return OmegaConf.create({**subset, "trainer": {"precision": precision}, "module": flags})


def check_plain_data(node: Any, key: str, source: str) -> None:
    """Raise ``ConfigError`` at the first untrusted ``_target_``, interpolation or non-plain
    value in ``node`` (a stored config section; ``key`` is its dotted name)."""
    if isinstance(node, dict):
        for name, value in node.items():
            where = f"{key}.{name}"
            if not isinstance(name, str):
                raise ConfigError(f"{source}: stored config key {where!r} is not a string")
            if name in HYDRA_KEYS:
                raise ConfigError(
                    f"{source}: stored config key {where} is not allowed (segpets rebuilds nets, "
                    f"loss and data from their stored arguments only); refusing the file"
                )
            if name == "_target_" and (not isinstance(value, str) or value not in TRUSTED_TARGETS):
                raise ConfigError(
                    f"{source}: untrusted target {value!r} at {where} (segpets rebuilds only its "
                    f"own models, loss and data modules and the albumentations transforms its "
                    f"configs use); refusing the file, nothing was built from it"
                )
            check_plain_data(value, where, source)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            check_plain_data(value, f"{key}[{i}]", source)
    elif node == "???":
        raise ConfigError(f"{source}: stored config value at {key} is '???' (never set)")
    elif isinstance(node, str) and "${" in node:
        raise ConfigError(
            f"{source}: untrusted interpolation {node!r} at {key} (segpets stores configs "
            f"resolved); refusing the file, nothing was built from it"
        )
    elif not isinstance(node, PLAIN):
        raise ConfigError(
            f"{source}: stored config value at {key} is a {type(node).__name__}, not plain data"
        )


def check_stored_values(section: Any, key: str, source: str) -> None:
    """Raise ``ConfigError`` for the first value of a stored (plain, trusted-target) section
    that the constructor it reaches cannot take, or an image size above
    :data:`~segpets.config_types.MAX_IMAGE_SIDE` anywhere in it."""
    problem = next(target_problems(section, key), None)
    if problem is not None:
        raise ConfigError(f"{source}: stored {problem.message}; refusing the file")
    for where, size in _sizes(section, key):
        if size > MAX_IMAGE_SIDE:
            raise ConfigError(
                f"{source}: stored {where} is {size} px, above the {MAX_IMAGE_SIDE} px segpets "
                f"resizes to at most; refusing the file"
            )


def _sizes(node: Any, key: str, sized: bool = False) -> list[tuple[str, int]]:
    """(dotted key, pixels) of every integer under a key in :data:`SIZE_KEYS` (lists too)."""
    if isinstance(node, dict):
        return [x for k, v in node.items() for x in _sizes(v, f"{key}.{k}", k in SIZE_KEYS)]
    if isinstance(node, list):
        return [x for i, v in enumerate(node) for x in _sizes(v, f"{key}[{i}]", sized)]
    if sized and isinstance(node, int) and not isinstance(node, bool):
        return [(key, node)]
    return []
