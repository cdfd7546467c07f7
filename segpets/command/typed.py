"""Every typed value of a config checked before anything is built, by the annotations of the
constructor it reaches.

Hydra passes values through as typed: ``trainer.max_epochs=abc`` reaches Lightning as a string
(a bare ``AssertionError``), ``data.image_size=48.5`` albumentations as a float (a pydantic
URL), ``model.num_classes=2`` the net (a traceback at the first validation step). Here each
config node with a ``_target_`` is matched against the signature of the class or function it
names (segpets', Lightning's, torch's, albumentations'), following ``**kwargs`` into base
classes, and each value is validated against its parameter's annotation with pydantic:
unknown arguments, missing required ones and values of the wrong type or range are one
:class:`Problem` each, saying what is allowed (:func:`segpets.config_types.describe`).
segpets' own constructors are annotated precisely (:mod:`segpets.config_types`); keys that
reach no constructor (``seed``, ``eval.boundary_tolerance``, predict's ``threshold``) are typed
in :data:`COMMAND_KEYS`, keyed by the command's config name.
"""

from __future__ import annotations

import contextlib
import inspect
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from annotated_types import Ge, Le
from hydra.utils import get_object
from pydantic import ConfigDict, TypeAdapter, ValidationError

from segpets.config_types import (
    TTA,
    Fraction,
    NonNegativeInt,
    PositiveInt,
    describe,
)

# torch.onnx's torch.export-based exporter (dynamo=True, what segpets.export uses) writes opsets
# 18 (its lowest) to torch.onnx._constants.ONNX_MAX_OPSET (23 in torch 2.14)
OPSETS = typing.Annotated[int, Ge(18), Le(23)]
DATA_MODULES = (
    "segpets.data.PetDataModule",
    "segpets.data.SyntheticPetDataModule",
    "segpets.data.FolderDataModule",
)
# Keys of each command's own config that reach no constructor: their types. A value that names
# classes ("trainer", a tuple of targets) types the keys under it by those classes' arguments,
# each optional (eval's data.* and trainer.*: null keeps the checkpoint's).
COMMAND_KEYS: dict[str, dict[str, Any]] = {
    "train": {
        "seed": int | None,
        "train": bool,
        "test": bool,
        "resume": bool,
        "ckpt_path": str | None,
        "optimized_metric": str | None,
    },
    "eval": {
        "split": Literal["test", "val"],
        "progress_bar": bool,
        "ckpt_path": str,
        "eval.tta": TTA,
        "eval.full_res": bool,
        "eval.boundary_tolerance": NonNegativeInt,
        "eval.worst_k": NonNegativeInt,
        "trainer": ("lightning.pytorch.Trainer",),
        "data": DATA_MODULES,
    },
    "predict": {
        "ckpt_path": str,
        "input": str,
        "output_dir": str,
        "threshold": Fraction,
        "tta": TTA,
        "overlay": bool,
        "probabilities": bool,
        "batch_size": PositiveInt,
        "overwrite": bool,
        "progress_bar": bool,
        "device": Literal["cpu", "cuda"],
    },
    "export": {
        "ckpt_path": str,
        "format": Literal["onnx", "torch_export", "torchscript"],
        "output": str | None,
        "overwrite": bool,
        "opset": OPSETS,
    },
    "bench": {
        "seed": int | None,
        "device": Literal["auto", "cpu", "cuda"],
        "batch_size": PositiveInt,
        "threads": PositiveInt | None,
        "warmup": NonNegativeInt,
        "steps": PositiveInt,
        "repeats": PositiveInt,
    },
}
_EMPTY = inspect.Parameter.empty


@dataclass(frozen=True)
class Problem:
    """One value that cannot work: its dotted ``key`` and a one-line ``message`` naming it."""

    key: str
    message: str


@dataclass(frozen=True)
class Param:
    annotation: Any  # _EMPTY when not annotated (or not resolvable)
    required: bool


def target_problems(node: Any, key: str = "") -> Iterator[Problem]:
    """Problems of every ``_target_`` node in ``node`` (plain, resolved data: dicts, lists,
    scalars), depth first in config order; ``key``: ``node``'s dotted name."""
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            yield from node_problems(node, key)
        for name, value in node.items():
            if isinstance(value, (dict, list)):
                yield from target_problems(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from target_problems(value, f"{key}[{i}]")


def node_problems(node: dict, key: str) -> Iterator[Problem]:
    """Problems of one ``_target_`` node's own arguments (see the module docstring); a target
    that cannot be imported is left to building it, which names the key."""
    target = node["_target_"]
    try:
        params, open_kwargs = parameters(get_object(target))
    except Exception:
        return
    prefix = f"{key}." if key else ""
    for name, value in node.items():
        if str(name).startswith("_"):  # _target_, _partial_, ...: Hydra's own
            continue
        param = params.get(name)
        if param is None:
            if not open_kwargs:
                takes = ", ".join(params) or "no arguments"
                yield Problem(f"{prefix}{name}", f"{prefix}{name}: {target} takes no argument "
                              f"'{name}' (it takes {takes})")  # fmt: skip
            continue
        if builds_objects(value):
            continue
        problem = value_problem(param.annotation, value, f"{prefix}{name}")
        if problem:
            yield problem
    if node.get("_partial_") is not True:
        for name, param in params.items():
            if param.required and name not in node:
                yield Problem(
                    f"{prefix}{name}",
                    f"{prefix}{name} is missing: {target} needs it ({describe(param.annotation)})",
                )


def value_problem(annotation: Any, value: Any, key: str) -> Problem | None:
    """A :class:`Problem` when ``value`` is not of ``annotation`` (pydantic's lax validation,
    but a value it would have to convert, ``'5'`` or ``5.0`` for an integer, is wrong too: the
    library receives it unconverted); ``None`` when it is, or cannot be told."""
    if annotation is _EMPTY or "${" in repr(value):  # not resolvable here (outside Hydra)
        return None
    adapter = _adapter(annotation)
    if adapter is None:
        return None
    try:
        result = adapter.validate_python(value)
    except ValidationError:
        return Problem(key, f"{key} must be {describe(annotation)}, got {value!r}")
    except Exception:  # a validator of a third-party type that cannot judge plain data
        return None
    if _converted(value, result):
        return Problem(key, f"{key} must be {describe(annotation)}, got {value!r}")
    return None


def schema_problems(node: dict, schema: dict[str, Any]) -> Iterator[Problem]:
    """Problems of the keys of a command's own config (``schema``: :data:`COMMAND_KEYS`)."""
    for key, annotation in schema.items():
        value = _select(node, key)
        if value is _MISSING:
            continue
        if isinstance(annotation, tuple):  # the keys under it are these classes' arguments
            yield from _arguments_problems(value, key, annotation)
            continue
        problem = value_problem(annotation, value, key)
        if problem:
            yield problem


def _arguments_problems(node: Any, key: str, targets: tuple[str, ...]) -> Iterator[Problem]:
    if not isinstance(node, dict):
        return
    params: dict[str, Param] = {}
    for target in reversed(targets):  # the first class's annotation wins
        try:
            params.update(parameters(get_object(target))[0])
        except Exception:
            continue
    for name, value in node.items():
        if value is None or name not in params or builds_objects(value):
            continue
        problem = value_problem(params[name].annotation, value, f"{key}.{name}")
        if problem:
            yield problem


def parameters(target: Any) -> tuple[dict[str, Param], bool]:
    """(name → :class:`Param`, whether unknown keyword arguments are accepted) of a class's
    constructor, following ``**kwargs`` up its bases (``SyntheticPetDataModule`` →
    ``PetDataModule`` → ``SegmentationDataModule``), or of a function. Only the class's own
    required arguments count as required."""
    functions = [target]
    if inspect.isclass(target):
        functions = [c.__dict__["__init__"] for c in target.__mro__ if "__init__" in c.__dict__]
    params: dict[str, Param] = {}
    for depth, function in enumerate(functions):
        signature = inspect.signature(function)
        hints = _hints(function)
        open_kwargs = False
        for name, p in signature.parameters.items():
            if name == "self" or p.kind == p.VAR_POSITIONAL:
                continue
            if p.kind == p.VAR_KEYWORD:
                open_kwargs = True
                continue
            # a base class's required argument is the subclass's to pass (root_dir=save_dir)
            required = p.default is _EMPTY and depth == 0
            params.setdefault(name, Param(hints.get(name, _EMPTY), required))
        if not open_kwargs:
            return params, False
    return params, True


def builds_objects(value: Any) -> bool:
    """Whether ``value`` is a config node Hydra instantiates (or a list holding one): an
    object is passed, not the plain data seen here."""
    if isinstance(value, dict):
        return "_target_" in value
    return isinstance(value, list) and any(builds_objects(v) for v in value)


def _hints(function: Any) -> dict[str, Any]:
    """Resolved annotations of ``function`` (strings under ``from __future__ import
    annotations`` evaluated in its module); one that cannot be resolved is left out."""
    try:
        return typing.get_type_hints(function, include_extras=True)
    except Exception:
        pass
    hints = {}
    namespace = getattr(function, "__globals__", {})
    for name, annotation in getattr(function, "__annotations__", {}).items():
        try:
            hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
        except Exception:
            continue
    return hints


_ADAPTERS: dict[Any, TypeAdapter | None] = {}


def _adapter(annotation: Any) -> TypeAdapter | None:
    """A cached pydantic ``TypeAdapter`` of ``annotation`` (classes allowed as they are), or
    ``None`` where pydantic cannot build one."""
    try:
        return _ADAPTERS[annotation]
    except (KeyError, TypeError):
        pass
    try:
        adapter = TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:
        try:
            adapter = TypeAdapter(annotation)
        except Exception:
            adapter = None
    with contextlib.suppress(TypeError):  # an unhashable annotation is not cached
        _ADAPTERS[annotation] = adapter
    return adapter


def _converted(value: Any, result: Any) -> bool:
    """Whether pydantic's lax mode had to convert a scalar the library would get as it is: a
    string into a number or bool, a float into an integer, a bool into a number (int → float,
    str → Path and str → Enum are fine); checked inside lists and dicts too."""
    if isinstance(value, (list, tuple)) and isinstance(result, (list, tuple)):
        return len(value) == len(result) and any(map(_converted, value, result))
    if isinstance(value, dict) and isinstance(result, dict):
        return any(_converted(v, result[k]) for k, v in value.items() if k in result)
    if isinstance(value, bool):
        return not isinstance(result, bool)
    if isinstance(value, str):
        return isinstance(result, (int, float, bool))
    if isinstance(value, float):
        return isinstance(result, int)
    return False


_MISSING = object()


def _select(node: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node
