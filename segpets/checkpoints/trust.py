"""Checkpoints and exports are data: what segpets rebuilds from them is checked first.

A checkpoint (or the config an ONNX/TorchScript export carries) stores the training config;
eval, predict, export and resume rebuild the net, loss and preprocessing from its ``model``,
``loss`` and ``data`` sections with ``hydra.utils.instantiate``, which imports and calls
whatever a ``_target_`` names. So before anything is built, :func:`trusted_config` walks those
sections (nested dicts and lists included) and refuses, with a one-line :class:`ConfigError`:

* a ``_target_`` that is neither in :data:`TRUSTED_TARGETS` (segpets' own models, loss and data
  modules, and the albumentations transforms segpets' configs use) nor vouched for by the user
  (:func:`vouched_targets`);
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

Vouching happens outside the file, never in it: the ``trusted_targets`` list of the run's own
composed config (command line, or the user's config files), and the ``segpets.trusted_targets``
entry-point group of installed packages (``name = package.module:Class``).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from importlib import import_module
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from hydra._internal.utils import _locate
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
VOUCH_KEY = "trusted_targets"  # the run config's list of targets the user vouches for
ENTRY_POINT_GROUP = "segpets.trusted_targets"  # installed packages vouch for their classes
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
PRECISIONS = ("16-true", "16-mixed", "bf16-true", "bf16-mixed", "32-true", "64-true")
PLAIN = (str, int, float, bool, type(None))
HYDRA_KEYS = ("_partial_", "_args_", "_recursive_", "_convert_")  # _target_ is checked apart
SIZE_KEYS = ("image_size", "height", "width", "size", "max_size", "min_size")  # pixels


def trusted_config(
    stored: Any,
    source: str,
    need: tuple[str, ...] = REBUILT_SECTIONS,
    vouched: Collection[str] = frozenset(),
) -> DictConfig:
    """``{model, loss, data, trainer: {precision}, module: {channels_last}}`` of a stored
    training config, after every check above; ``source`` names the file in the error (e.g.
    ``ckpt_path: '/x.ckpt'``); ``vouched``: the targets the user vouches for beyond segpets'
    own (:func:`vouched_targets`).

    Raises ``ConfigError`` when ``stored`` lacks a section in ``need`` ("not a segpets ...")
    or anything in the rebuilt sections is untrusted. Nothing is resolved or imported here.
    """
    if not isinstance(stored, dict) or any(not isinstance(stored.get(k), dict) for k in need):
        raise ConfigError(f"{source} is not a segpets training checkpoint (no {'/'.join(need)})")
    subset = {key: stored[key] for key in REBUILT_SECTIONS if key in stored}
    for key, section in subset.items():
        check_plain_data(section, key, source, vouched)
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


def check_plain_data(
    node: Any, key: str, source: str, vouched: Collection[str] = frozenset()
) -> None:
    """Raise ``ConfigError`` at the first untrusted ``_target_`` (neither segpets' own nor in
    ``vouched``), interpolation or non-plain value in ``node`` (a stored config section;
    ``key`` is its dotted name)."""
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
            if name == "_target_" and not _trusted(value, vouched):
                raise ConfigError(_untrusted_target(value, where, source))
            check_plain_data(value, where, source, vouched)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            check_plain_data(value, f"{key}[{i}]", source, vouched)
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


def _trusted(target: Any, vouched: Collection[str]) -> bool:
    return isinstance(target, str) and (target in TRUSTED_TARGETS or target in vouched)


def _untrusted_target(target: Any, where: str, source: str) -> str:
    """The refusal: which target, where, and how a user who trusts that code vouches for it."""
    how = (
        f"if you trust that code, vouch for it with {VOUCH_KEY}=[{target}] (command line or "
        f"your config) or a '{ENTRY_POINT_GROUP}' entry point of the package that defines it"
        if isinstance(target, str) and _DOTTED.fullmatch(target)
        else "it is not a dotted name of a class"
    )
    return (
        f"{source}: untrusted target {target!r} at {where} (segpets rebuilds only its own "
        f"models, loss and data modules, the albumentations transforms its configs use, and "
        f"what you vouch for; {how}); refusing the file, nothing was built from it"
    )


def vouched_targets(cfg: Any) -> frozenset[str]:
    """The targets the user vouches for: the run config's ``trusted_targets`` list (each
    checked to import, :func:`listed_targets`) and every ``segpets.trusted_targets`` entry
    point of the installed packages (:func:`installed_targets`). ``cfg``: the composed run
    config (a ``DictConfig`` or plain dict), never a stored one. Raises ``ConfigError``."""
    return listed_targets(cfg) | installed_targets()


def listed_targets(cfg: Any) -> frozenset[str]:
    """The run config's ``trusted_targets``: dotted names (``package.module.Class``), each
    imported now (Hydra's own lookup, as ``instantiate`` will do it), so a typo or a missing
    package is one ``ConfigError`` naming the entry before any work starts."""
    value = cfg.get(VOUCH_KEY) if cfg is not None else None
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        raise ConfigError(
            f"{VOUCH_KEY}: expected a list of dotted names, e.g. {VOUCH_KEY}=[mypkg.nets.MyNet], "
            f"got {value!r}"
        )
    for i, name in enumerate(value):
        if not isinstance(name, str) or not _DOTTED.fullmatch(name):
            raise ConfigError(
                f"{VOUCH_KEY}[{i}]: {name!r} is not a dotted name (package.module.Class)"
            )
        problem = import_problem(name)
        if problem:
            raise ConfigError(
                f"{VOUCH_KEY}: '{name}' does not import ({problem}); install its package or put "
                f"it on PYTHONPATH, or fix the name"
            )
    return frozenset(value)


def import_problem(name: str) -> str | None:
    """Why the dotted ``name`` cannot be looked up as ``instantiate`` will do it (Hydra's own
    lookup), in a few words; ``None`` when it imports."""
    try:
        _locate(name)
        return None
    except Exception as err:  # ImportError, or whatever the module raised while importing
        fallback = _first_line(err)
    parts, obj = name.split("."), None
    for i, part in enumerate(parts):  # walk it again, to say which part is missing
        prefix, parent = ".".join(parts[: i + 1]), ".".join(parts[:i])
        if obj is not None and hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        if obj is not None and not isinstance(obj, ModuleType):
            return f"'{parent}' has no attribute '{part}'"
        try:
            obj = import_module(prefix)
        except ModuleNotFoundError as missing:
            if missing.name != prefix:
                return f"importing '{prefix}' failed: no module named '{missing.name}'"
            if i == 0:
                return f"no module named '{prefix}'"
            return f"'{parent}' has no attribute or submodule '{part}'"
        except Exception as broken:  # the module itself fails while importing
            return f"importing '{prefix}' raised {type(broken).__name__}: {_first_line(broken)}"
    return fallback


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def installed_targets() -> frozenset[str]:
    """Targets vouched for by installed packages: the values of their ``segpets.trusted_targets``
    entry points (``tiny = mynets.models:TinyNet`` vouches for ``mynets.models.TinyNet``).
    Nothing is imported here; a broken package fails when a target of it is built."""
    found = set()
    for point in entry_points(group=ENTRY_POINT_GROUP):
        found.add(f"{point.module}.{point.attr}" if point.attr else point.module)
    return frozenset(found)


def config_targets(node: Any) -> frozenset[str]:
    """Every ``_target_`` string in ``node`` (a resolved config as plain data): e.g. what a
    run composed from the user's own configs builds itself."""
    if isinstance(node, dict):
        own = {node["_target_"]} if isinstance(node.get("_target_"), str) else set()
        return frozenset(own.union(*(config_targets(v) for v in node.values())))
    if isinstance(node, list):
        return frozenset().union(*(config_targets(v) for v in node))
    return frozenset()
