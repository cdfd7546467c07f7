"""A ``torch.export`` archive (``.pt2``) is data: checked as a zip before torch reads it.

``torch.export.load`` (torch 2.14) runs what a crafted archive chooses in several places:
pickled weights and constants (``torch.load(weights_only=False)``, ``pickle.loads``), sample
inputs (retried with ``weights_only=False`` when the safe load fails), AOTInductor shared
libraries, graph node targets resolved by attribute walks from ``torch``/``operator`` (any
callable reachable from there: ``torch.serialization.os.system``), symbolic expressions parsed
by ``sympy.sympify`` (``eval``) and shape guards compiled into Python by ``module()``.

:func:`read_pt2` therefore accepts only what ``segpets.export format=torch_export`` writes: the
archive's known files; weights and constants stored as raw tensors; sample inputs a
``weights_only`` load reads; node targets that are ATen operators (``torch.ops.aten.*``),
``operator`` arithmetic or ``torch.sym_*``; symbolic expressions and guards made only of
numbers, sizes, arithmetic and the sympy/torch functions listed here. Anything else is a
``ConfigError`` naming the file. It returns the embedded config (``extra/segpets_config.json``)
for :func:`segpets.inference.model.exported_config` to check, all before ``torch.export.load``.
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from segpets.errors import ConfigError

# the archive's files, relative to its root folder (torch.export.pt2_archive.constants)
_KNOWN_FILES = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/\w+\.json|data/weights/\w+_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/\w+_constants_config\.json|data/constants/tensor_\d+"
    r"|data/sample_inputs/\w+\.pt|extra/[\w.-]+"
)
_ATEN = re.compile(r"torch\.ops\.aten\.(?!\w*__)[a-z_][a-z0-9_]*\.(?!\w*__)[A-Za-z0-9_]+")
_DENIED_ATEN = ("torch.ops.aten.from_file.",)  # reads a file named by the graph
_OPERATORS = {
    f"_operator.{name}"
    for name in ["getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pow"]
    + ["eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "not_"]
}
_SYM = {f"torch.sym_{n}" for n in ("float", "int", "max", "min", "not", "ite", "sqrt", "sum")}
_MATH = {f"math.{n}" for n in ("ceil", "floor", "trunc", "sqrt")}
# sympy names a symbolic expression may call (torch.utils._sympy.functions and sympy's own)
_SYMPY_CALLS = {
    *["Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Abs"],
    *["Mod", "FloorDiv", "CeilDiv", "PythonMod", "CleanDiv", "ModularIndexing", "Where"],
    *["CeilToInt", "FloorToInt", "TruncToInt", "TruncToFloat", "RoundToInt", "RoundDecimal"],
    *["IntTrueDiv", "FloatTrueDiv", "ToFloat", "FloatPow", "PowByNatural", "Identity"],
    *["IsNonOverlappingAndDenseIndicator", "LShift", "RShift"],
    *["Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not"],
    *["Equality", "Unequality", "GreaterThan", "StrictGreaterThan", "LessThan"],
    *["StrictLessThan"],
}
_SYMPY_KEYWORDS = {"positive", "integer", "nonnegative", "real", "finite", "evaluate"}
_SYMBOL = re.compile(r"[a-z]+\d+")
_GUARD_ATTRS = {"size", "stride", "storage_offset"}
# a damaged zip, bad JSON, or JSON of another shape than torch writes
_UNREADABLE = (zipfile.BadZipFile, OSError, UnicodeDecodeError, ValueError, KeyError, TypeError)
_UNREADABLE += (AttributeError,)


def read_pt2(path: Path, config_name: str) -> str | None:
    """The text of ``extra/<config_name>`` in the archive at ``path`` (``None`` if absent),
    after checking that loading the archive can run nothing it names (see the module
    docstring). Raises ``ConfigError`` naming ``path``."""
    try:
        with zipfile.ZipFile(path) as archive:
            files = _archive_files(archive, path)
            for name in files:
                if name.startswith("models/"):
                    model = name[len("models/") : -len(".json")]
                    _check_model(files, model, path)
            extra = f"extra/{config_name}"
            return files.read(extra).decode() if extra in files else None
    except _UNREADABLE as err:
        raise _refused(path, f"unreadable ({err})") from None


def _refused(path: Path, why: str) -> ConfigError:
    return ConfigError(f"ckpt_path: refusing torch.export archive '{path}': {why}")


class _Files(dict):
    """Archive files by their name under the root folder; ``read(name)`` gives the bytes."""

    def __init__(self, archive: zipfile.ZipFile, names: dict[str, str]) -> None:
        super().__init__(names)
        self.archive = archive

    def read(self, name: str) -> bytes:
        return self.archive.read(self[name])


def _archive_files(archive: zipfile.ZipFile, path: Path) -> _Files:
    names = [n for n in archive.namelist() if not n.endswith("/")]
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or any("/" not in n for n in names):
        raise _refused(path, "not a torch.export archive (one root folder expected)")
    files = {n.split("/", 1)[1]: n for n in names}
    unknown = sorted(n for n in files if not _KNOWN_FILES.fullmatch(n))
    if unknown:
        raise _refused(path, f"unexpected entry '{unknown[0]}' (compiled code or pickles)")
    if not any(n.startswith("models/") for n in files):
        raise _refused(path, "no exported program inside")
    return _Files(archive, files)


def _check_model(files: _Files, model: str, path: Path) -> None:
    for kind, prefix in (("weights", "weight_"), ("constants", "tensor_")):
        config = f"data/{kind}/{model}_{kind}_config.json"
        payloads = json.loads(files.read(config))["config"] if config in files else {}
        for name, meta in payloads.items():
            if meta.get("use_pickle") or not str(meta.get("path_name", "")).startswith(prefix):
                raise _refused(path, f"{kind} '{name}' is not stored as a plain tensor")
    inputs = f"data/sample_inputs/{model}.pt"
    if inputs in files:
        try:  # torch retries a failed safe load with weights_only=False: it must not fail
            torch.load(io.BytesIO(files.read(inputs)), weights_only=True)
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise _refused(path, f"sample inputs need more than tensors ({first})") from None
    _check_program(json.loads(files.read(f"models/{model}.json")), path)


def _check_program(program: dict, path: Path) -> None:
    for key, value in _strings(program):
        if key in ("target", "as_operator") and not _allowed_target(value):
            raise _refused(path, f"graph calls '{value}', not an ATen operator")
        if key == "expr_str" and not _safe(value, _sympy_node):
            raise _refused(path, f"symbolic expression '{value[:80]}' holds code")
        if key == "guards_code" and not _safe(value, _guard_node):
            raise _refused(path, f"shape guard '{value[:80]}' holds code")
    for name in program.get("range_constraints") or {}:
        if not _SYMBOL.fullmatch(name):
            raise _refused(path, f"symbol name '{name[:80]}'")


def _strings(node: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(the key it is under, value) of every string in a JSON tree (list items: the list's)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, k)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item, key)
    elif isinstance(node, str):
        yield key, node


def _allowed_target(target: str) -> bool:
    if target.startswith(_DENIED_ATEN):
        return False
    return bool(_ATEN.fullmatch(target)) or target in _OPERATORS | _SYM | _MATH


def _safe(text: str, allowed) -> bool:
    """Whether every node of ``text`` parsed as a Python expression passes ``allowed``."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return False
    return all(allowed(node) for node in ast.walk(tree))


_ARITHMETIC = (
    ast.Expression, ast.Load, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Add,
    ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd, ast.Not,
    ast.And, ast.Or, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE,
)  # fmt: skip


def _sympy_node(node: ast.AST) -> bool:
    """sympy's repr: ``Mul(Integer(2), Symbol('s0', positive=True, integer=True))``."""
    if isinstance(node, _ARITHMETIC):
        return True
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name) and node.func.id in _SYMPY_CALLS
    if isinstance(node, ast.keyword):
        return node.arg in _SYMPY_KEYWORDS
    if isinstance(node, ast.Name):
        return node.id in _SYMPY_CALLS or node.id in ("True", "False", "true", "false", "oo")
    if isinstance(node, ast.Constant):
        value = node.value
        return isinstance(value, (int, float, bool)) or (
            isinstance(value, str) and bool(_SYMBOL.fullmatch(value) or value.isdigit())
        )
    return False


def _guard_node(node: ast.AST) -> bool:
    """Shape guards: ``(L['x'].size()[3] // 2) != 1``, ``torch.sym_max(32, ...)``."""
    if isinstance(node, (*_ARITHMETIC, ast.Subscript)):
        return True
    if isinstance(node, ast.Name):
        return node.id in ("L", "torch")
    if isinstance(node, ast.Attribute):
        base_is_torch = isinstance(node.value, ast.Name) and node.value.id == "torch"
        return f"torch.{node.attr}" in _SYM if base_is_torch else node.attr in _GUARD_ATTRS
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Attribute) and not node.keywords
    if isinstance(node, ast.Constant):
        value = node.value
        return isinstance(value, (int, bool)) or (
            isinstance(value, str) and value.isidentifier() and "__" not in value
        )
    return False
