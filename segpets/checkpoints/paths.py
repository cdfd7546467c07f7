"""Paths a checkpoint carries are data: which ones segpets may follow, and to where.

A checkpoint (or a run record) from elsewhere may name any file: ``ModelCheckpoint``'s
``best_model_path``/``best_k_models``/``kth_best_model_path``/``last_model_path``, the names
of a ``data=folder`` split, the stored ``data.cache_dir``, ``data.groups`` or split files.
segpets reads, copies, tests or deletes none of them blindly:

* a checkpoint file a checkpoint records is used only if a segpets checkpoint of the same net
  by that *name* lies in the recorded checkpoint's own folder (``checkpoints/`` beside it), a
  regular file or a link that stays in that folder (:func:`checkpoint_beside`); the recorded
  folder is never looked at;
* a split names samples, never paths: a name that is not a plain file stem (``../x``,
  ``/etc/passwd``, ``a/b``) is dropped (:func:`plain_names`);
* ``segpets.eval`` never takes a stored path to write or read besides the data itself
  (:func:`stored_data_paths`): no cache folder, groups file, split file or download the
  checkpoint names.

Each drop is one warning naming the entries and why.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch

log = logging.getLogger(__name__)

# data.* keys of a stored config that name files to read or write other than the data itself:
# replaced by this command's own values, or dropped (eval: ``stored_data_paths``)
STORED_PATH_KEYS = ("cache_dir", "groups", "splits", "download")


def is_plain_name(name: Any) -> bool:
    """A non-empty file name without any folder part on POSIX or Windows (``a.ckpt``, not
    ``../a``, ``/a``, ``a/b``, ``C:a``, ``.``, ``..``)."""
    if not isinstance(name, str) or name in ("", ".", "..") or "\0" in name:
        return False
    return PurePosixPath(name).name == name and PureWindowsPath(name).name == name


def plain_names(names: Iterable[str], what: str) -> list[str]:
    """``names`` without those that are not plain file stems (:func:`is_plain_name`), with one
    warning naming the dropped ones (``what`` says where they came from)."""
    names = list(names)
    kept = [n for n in names if is_plain_name(n)]
    if len(kept) < len(names):
        bad = [repr(n) for n in names if not is_plain_name(n)]
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        log.warning(
            "%s: dropped %d sample name(s) that are not file stems (segpets never follows a "
            "path a checkpoint names): %s", what, len(bad), shown,
        )  # fmt: skip
    return kept


def checkpoint_beside(recorded: str, folder: Path, model: Any) -> Path | str:
    """The file ``recorded`` (a path a checkpoint stores) may name: ``folder / <its name>``
    when that is a segpets checkpoint of the net ``model`` (the stored ``model`` section)
    inside ``folder`` (a link only if it stays there); else the reason it is not used.
    ``folder``: the recorded checkpoint's own (resolved) folder; nothing outside is read."""
    name = str(recorded).replace("\\", "/").rsplit("/", 1)[-1]
    if not is_plain_name(name):
        return "not a file name"
    candidate = folder / name
    if not os.path.lexists(candidate):
        return f"no '{name}' in '{folder}'"
    real = Path(os.path.realpath(candidate))
    if real.parent != folder:
        return f"'{candidate}' is a link out of '{folder}'"
    if not real.is_file():
        return f"'{candidate}' is not a file"
    try:  # weights_only: no code runs; mmap: the tensors are not read
        ckpt = torch.load(real, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a checkpoint (any file, torn, a pickle needing code)
        return f"'{candidate}' is not a segpets checkpoint"
    ckpt = ckpt if isinstance(ckpt, dict) else {}
    hparams = ckpt.get("hyper_parameters")
    config = hparams.get("config") if isinstance(hparams, dict) else None
    if not isinstance(ckpt.get("state_dict"), dict) or not isinstance(config, dict):
        return f"'{candidate}' is not a segpets checkpoint"
    if config.get("model") != model:
        return f"'{candidate}' is a checkpoint of another net"
    return candidate


def stored_data_paths(stored: dict[str, Any], given: dict[str, Any], cache_root: str) -> dict:
    """A checkpoint's stored ``data`` section for ``segpets.eval``, without the paths it names
    to read or write besides the data itself (:data:`STORED_PATH_KEYS`), unless this command
    gives them (``given``: its non-null ``data.*`` values): ``cache_dir`` becomes this
    machine's (``cache_root``, from ``paths.cache_dir``), ``groups`` and split files are
    dropped (the split travels in the checkpoint's data-module state), ``download`` is off.
    One warning names what a checkpoint asked for and was not followed."""
    data, ignored = dict(stored), []
    if stored.get("cache_dir") and "cache_dir" not in given:
        data["cache_dir"] = cache_root
    if stored.get("groups") and "groups" not in given:
        data["groups"] = None
        ignored.append(f"data.groups={stored['groups']!r}")
    splits = stored.get("splits")
    if isinstance(splits, dict) and any(splits.values()) and "splits" not in given:
        data["splits"] = {split: None for split in splits}
        ignored.append(f"data.splits={splits!r}")
    if stored.get("download") and "download" not in given:
        data["download"] = False
        ignored.append("data.download=true")
    if ignored:
        log.warning(
            "the checkpoint's %s: not followed (segpets reads no file a checkpoint names "
            "besides the data); give them on this command line to use them",
            ", ".join(ignored),
        )
    return data
