"""Paths a run stores are absolute, so its checkpoints work from any folder.

segpets resolves relative paths against the folder a command runs from (Hydra does not
change it). A run's config rides along in every checkpoint (and ``.hydra/config.yaml``), and
eval, predict, export, resume and the analysis notebook rebuild the data module from it, often
from another folder: a stored ``data.root: data/oxford-iiit-pet`` would mean something else
there. So before a run builds anything, :func:`make_paths_absolute` replaces every relative
path value of :data:`PATH_KEYS` with its absolute form (``~`` expanded, symlinks kept), and
that is what is stored. What the user typed stays in the run record's
``.hydra/overrides.yaml`` (Hydra's ``overrides.task``).
"""

from __future__ import annotations

import os
from fnmatch import fnmatchcase
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from segpets.command.checks import flatten

# Config keys (fnmatch patterns) whose values are file or folder paths, in the order they are
# made absolute: `paths.*` first, so values interpolating them (data.root: ${paths.data_dir}/x)
# follow without being rewritten themselves.
PATH_KEYS = (
    "paths.*",
    "data.root",
    "data.images",
    "data.masks",
    "data.splits.*",
    "data.groups",
    "data.cache_dir",
    "data.split_dir",
    "ckpt_path",
)
NOT_PATHS = {"ckpt_path": ("last",)}  # ckpt_path=last: the newest last.ckpt, not a file


def make_paths_absolute(cfg: DictConfig) -> dict[str, str]:
    """Replace, in place, the relative path values of ``cfg`` (keys in :data:`PATH_KEYS`)
    with absolute ones, relative to the current working directory. A value that does not
    resolve yet (``${hydra:...}`` outside a Hydra run) or is not a string is left alone.
    Returns ``{key: value as it was}`` for the keys changed."""
    changed = {}
    keys = flatten(OmegaConf.to_container(cfg, resolve=False))
    for pattern in PATH_KEYS:
        for key in [k for k in keys if fnmatchcase(k, pattern) and "[" not in k]:
            try:
                value = OmegaConf.select(cfg, key, throw_on_missing=True)
            except OmegaConfBaseException:
                continue
            absolute = absolute_path(key, value)
            if absolute is not None:
                OmegaConf.update(cfg, key, absolute, merge=False)
                changed[key] = value
    return changed


def stored_paths_absolute(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stored config (plain data) whose relative path values (:data:`PATH_KEYS`)
    are read against the current working directory, as segpets before 0.2 used them: so a
    run resumed from an older checkpoint compares like with like."""
    config = _copy(config)
    for key, value in flatten(config).items():
        absolute = absolute_path(key, value) if _is_path_key(key) and "[" not in key else None
        if absolute is not None:
            _set(config, key.split("."), absolute)
    return config


def absolute_path(key: str, value: Any) -> str | None:
    """The absolute form of ``value`` when it is a relative (or ``~``) path string, else
    ``None`` (already absolute, not a string, a URL, or a keyword of :data:`NOT_PATHS`)."""
    if not isinstance(value, str) or not value or "://" in value or "${" in value:
        return None
    if value in NOT_PATHS.get(key, ()):
        return None
    expanded = os.path.expanduser(value)
    if os.path.isabs(expanded) and expanded == value:
        return None
    return os.path.abspath(expanded)


def _is_path_key(key: str) -> bool:
    return any(fnmatchcase(key, pattern) for pattern in PATH_KEYS)


def _copy(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_copy(v) for v in node]
    return node


def _set(node: dict, parts: list[str], value: str) -> None:
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
