"""Decode-once cache: every image and mask of a split, converted and resized to the training
size, stored as uint8 ``.npy`` arrays that are memory-mapped by every epoch, worker and run.

Decoding a JPEG (plus the RGB conversion and the resize) costs far more than the per-sample
augmentations at 96–256 px, so it is done once per (dataset root, split, size). An entry lives
in ``<cache_dir>/<root name>-<root hash>/<split>-<size>px/`` — never under the dataset root,
which may be read-only — and records a fingerprint of its source files (names, sizes and
modification times); when any of them changes, the entry is rebuilt on next use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import albumentations as A
import numpy as np
import torch

from segpets.data.oxford_pet import (
    PetSegmentationDataset,
    Transform,
    image_path,
    load_pair,
    trimap_path,
)
from segpets.errors import ConfigError

log = logging.getLogger(__name__)
META = "meta.json"


def fingerprint(root: Path, names: Sequence[str]) -> str:
    """Hash of the names (in order) and each source file's size and mtime."""
    digest = hashlib.sha256()
    for name in names:
        for path in (image_path(root, name), trimap_path(root, name)):
            stat = path.stat()
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def entry_dir(cache_dir: Path, root: Path, split: str, size: int) -> Path:
    """``<cache_dir>/<root name>-<hash of the absolute root>/<split>-<size>px``."""
    root_hash = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return cache_dir / f"{root.name}-{root_hash}" / f"{split}-{size}px"


def _decode_resized(root: Path, name: str, resize: A.Resize) -> tuple[np.ndarray, np.ndarray]:
    """(S, S, 3) and (S, S) uint8 — the same resize as the eval pipeline's ``Resize`` (linear
    for the image, nearest for the mask), so cached eval samples equal uncached ones."""
    image, mask = load_pair(root, name)
    out = resize(image=image, mask=mask)
    return out["image"], out["mask"]


def _build(entry: Path, root: Path, names: Sequence[str], size: int, stamp: str) -> None:
    """Write the arrays to a temporary sibling, then swap it in, so a crash or a concurrent
    builder never leaves a half-written entry that looks valid."""
    tmp = entry.with_name(f"{entry.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    images = np.lib.format.open_memmap(
        tmp / "images.npy", "w+", np.uint8, (len(names), size, size, 3)
    )
    masks = np.lib.format.open_memmap(tmp / "masks.npy", "w+", np.uint8, (len(names), size, size))
    resize = A.Resize(size, size)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL decodes without the GIL
        for i, (image, mask) in enumerate(
            pool.map(lambda n: _decode_resized(root, n, resize), names)
        ):
            images[i], masks[i] = image, mask
    images.flush(), masks.flush()
    del images, masks
    meta = {"root": str(root), "size": size, "names": list(names), "fingerprint": stamp}
    (tmp / META).write_text(json.dumps(meta))
    old = entry.with_name(f"{entry.name}.old-{os.getpid()}")
    if entry.exists():
        entry.rename(old)  # readers that still map the old arrays keep them until they close
    try:
        tmp.rename(entry)
    except OSError:  # another process swapped its (identical) build in first
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def load_or_build(
    cache_dir: str | Path, root: Path, split: str, names: Sequence[str], size: int
) -> tuple[Path, bool]:
    """(entry folder, hit): reuse the entry when its fingerprint matches the files on disk,
    otherwise (re)build it."""
    cache_dir = Path(cache_dir).expanduser().resolve()
    if cache_dir.is_relative_to(root):
        raise ConfigError(
            f"data.cache_dir '{cache_dir}' is inside the dataset root '{root}'; the cache must "
            f"live elsewhere (the dataset may be read-only)"
        )
    entry = entry_dir(cache_dir, root, split, size)
    stamp = fingerprint(root, names)
    try:
        hit = json.loads((entry / META).read_text()).get("fingerprint") == stamp
    except (OSError, ValueError):
        hit = False
    if not hit:
        log.info("building the %s %dpx cache of '%s' in %s", split, size, root, entry)
        _build(entry, root, names, size, stamp)
    return entry, hit


class CachedPetDataset(PetSegmentationDataset):
    """:class:`PetSegmentationDataset` reading decoded, resized uint8 arrays from a cache entry
    instead of the JPEG/PNG files; the (random) ``transform`` still runs on every sample.

    The arrays are memory-mapped lazily in each process (workers included), so nothing large
    is pickled into worker processes and every process shares the OS page cache.
    """

    def __init__(self, root: Path, names: Sequence[str], transform: Transform, entry: Path):
        super().__init__(root, names, transform)
        self.entry = entry
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, S, 3) images and (N, S, S) masks, memory-mapped read-only."""
        if self._arrays is None:
            self._arrays = tuple(  # type: ignore[assignment]
                np.load(self.entry / f, mmap_mode="r") for f in ("images.npy", "masks.npy")
            )
        return self._arrays  # type: ignore[return-value]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": None}

    def __getitem__(self, index: int) -> dict:
        images, masks = self.arrays()
        # copies: augmentations may write in place, and the maps are read-only
        out = self.transform(image=np.array(images[index]), mask=np.array(masks[index]))
        return {
            "image": out["image"],
            "mask": torch.as_tensor(out["mask"]).unsqueeze(0).float(),
            "name": self.names[index],
        }
