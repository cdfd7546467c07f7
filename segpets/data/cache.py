"""Decode-once cache: every image and mask of a split, converted and resized to the training
size, stored as uint8 ``.npy`` arrays that are memory-mapped by every epoch, worker and run.

Decoding a JPEG (plus the RGB conversion and the resize) costs far more than the per-sample
augmentations at 96–256 px, so it is done once per (dataset, split, size, resampling).
Each split is shrunk the way its own pipeline's first step (``Resize`` or
``RandomResizedCrop``) shrinks, so cached eval samples equal uncached ones. An entry lives
in ``<cache_dir>/<dataset name>-<hash of its folders and label mapping>/<split>-<size>px-
<resampling>/`` — never under the dataset, which may be read-only — and records a fingerprint
of its source files (names, sizes and modification times); when any of them changes, the
entry is rebuilt on next use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import cv2
import numpy as np

from segpets.data.dataset import SampleSource, SegmentationDataset, Transform
from segpets.errors import ConfigError, DataError

log = logging.getLogger(__name__)
META = "meta.json"
# Part of every fingerprint; change it whenever the cached pixels change for the same files
# (format 2: each split resampled as its pipeline does; 3: masks resized centre-aligned, and
# records of samples skipped by data.bad_samples=skip; 4: 16-bit, 32-bit and float pictures
# scaled by their range, no longer clipped), so older entries are rebuilt.
FORMAT = "segpets-cache-4"


@dataclass(frozen=True)
class Resampling:
    """How a pipeline resizes: albumentations' ``interpolation`` (a cv2 flag for the image),
    ``area_for_downscale`` (None, or "image": cv2's area averaging when shrinking) and
    ``mask_interpolation`` (the cv2 flag for the mask; ``INTER_NEAREST_EXACT`` keeps it
    centre-aligned with the image, plain ``INTER_NEAREST`` shifts it ~0.5 px)."""

    interpolation: int = cv2.INTER_LINEAR
    area_for_downscale: str | None = None
    mask_interpolation: int = cv2.INTER_NEAREST_EXACT

    @classmethod
    def of(cls, pipeline: object) -> Resampling:
        """The resampling of the first resizing step of an albumentations ``Compose``."""
        for step in getattr(pipeline, "transforms", []):
            if isinstance(step, A.Resize | A.RandomResizedCrop):
                return cls(
                    int(step.interpolation), step.area_for_downscale, int(step.mask_interpolation)
                )
        return cls()

    @property
    def tag(self) -> str:
        """Folder-name part, e.g. ``area-linear-mask-nearest_exact``."""
        image = _name(self.interpolation)
        image = f"area-{image}" if self.area_for_downscale else image
        return f"{image}-mask-{_name(self.mask_interpolation)}"

    def resize(self, size: int) -> A.Resize:
        return A.Resize(
            size,
            size,
            interpolation=self.interpolation,  # type: ignore[arg-type]
            area_for_downscale=self.area_for_downscale,  # type: ignore[arg-type]
            mask_interpolation=self.mask_interpolation,  # type: ignore[arg-type]
        )


INTERPOLATION_NAMES = {
    cv2.INTER_NEAREST: "nearest",
    cv2.INTER_NEAREST_EXACT: "nearest_exact",
    cv2.INTER_LINEAR: "linear",
    cv2.INTER_CUBIC: "cubic",
    cv2.INTER_AREA: "area",
    cv2.INTER_LANCZOS4: "lanczos",
}


def _name(flag: int) -> str:
    return INTERPOLATION_NAMES.get(flag, f"cv2-{flag}")


def fingerprint(source: SampleSource, names: Sequence[str]) -> str:
    """Hash of the cache format, the names (in order) and each source file's size and mtime."""
    digest = hashlib.sha256(FORMAT.encode())
    for name in names:
        for path in source.files(name):
            stat = path.stat()
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def entry_dir(
    cache_dir: Path,
    source: SampleSource,
    split: str,
    size: int,
    resampling: Resampling = Resampling(),
) -> Path:
    """``<cache_dir>/<name>-<hash of source.cache_key>/<split>-<size>px-<resampling>``."""
    key_hash = hashlib.sha256(source.cache_key.encode()).hexdigest()[:12]
    return cache_dir / f"{source.name}-{key_hash}" / f"{split}-{size}px-{resampling.tag}"


def _decode_resized(
    source: SampleSource, name: str, resize: A.Resize
) -> tuple[np.ndarray, np.ndarray]:
    """(S, S, 3) and (S, S) uint8, resized as the split's pipeline resizes image and mask."""
    image, mask = source.load_pair(name)
    out = resize(image=image, mask=mask)
    return out["image"], out["mask"]


def _build(
    entry: Path,
    source: SampleSource,
    names: Sequence[str],
    resize: A.Resize,
    stamp: str,
    skip_bad: bool = False,
) -> None:
    """Write the arrays to a temporary sibling, then swap it in, so a crash or a concurrent
    builder never leaves a half-written entry that looks valid. A sample that fails to decode
    raises its ``DataError``, or with ``skip_bad`` is recorded in ``meta.json`` (``bad``:
    name → message) and left out by :class:`CachedPetDataset`."""
    size = resize.height
    tmp = entry.with_name(f"{entry.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except OSError as err:
        raise ConfigError(
            f"data.cache_dir: cannot create the cache folder '{tmp.parent}' "
            f"({err.strerror or err}); set data.cache_dir=<a writable folder> or data.cache=false"
        ) from None
    try:
        bad = _write_arrays(tmp, source, names, resize, skip_bad)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    meta = {"source": source.cache_key, "size": size, "names": list(names), "fingerprint": stamp}
    (tmp / META).write_text(json.dumps({**meta, "bad": bad}))
    old = entry.with_name(f"{entry.name}.old-{os.getpid()}")
    if entry.exists():
        entry.rename(old)  # readers that still map the old arrays keep them until they close
    try:
        tmp.rename(entry)
    except OSError:  # another process swapped its (identical) build in first
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def _write_arrays(
    folder: Path, source: SampleSource, names: Sequence[str], resize: A.Resize, skip_bad: bool
) -> dict[str, str]:
    """``images.npy`` (N, S, S, 3) and ``masks.npy`` (N, S, S) uint8 in ``folder``; returns the
    samples skipped (name → error message), whose rows stay zero."""
    size = resize.height
    shape = (len(names), size, size)
    images = np.lib.format.open_memmap(folder / "images.npy", "w+", np.uint8, (*shape, 3))
    masks = np.lib.format.open_memmap(folder / "masks.npy", "w+", np.uint8, shape)

    def decode(name: str) -> tuple[np.ndarray, np.ndarray] | str:
        try:
            return _decode_resized(source, name, resize)
        except DataError as err:
            if not skip_bad:
                raise
            return str(err)

    bad: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL decodes without the GIL
        for i, (name, out) in enumerate(zip(names, pool.map(decode, names), strict=True)):
            if isinstance(out, str):
                bad[name] = out
            else:
                images[i], masks[i] = out
    images.flush(), masks.flush()
    return bad


def bad_samples(entry: Path) -> dict[str, str]:
    """Samples a ``data.bad_samples=skip`` build could not decode: name → error message."""
    return json.loads((entry / META).read_text()).get("bad", {})


def load_or_build(
    cache_dir: str | Path,
    source: SampleSource,
    split: str,
    names: Sequence[str],
    size: int,
    resampling: Resampling = Resampling(),
    skip_bad: bool = False,
) -> tuple[Path, bool]:
    """(entry folder, hit): reuse the entry when its fingerprint matches the files on disk,
    otherwise (re)build it, resizing with ``resampling``; with ``skip_bad`` samples that fail
    to decode are recorded (:func:`bad_samples`) instead of raising."""
    cache_dir = Path(cache_dir).expanduser().resolve()
    for root in source.roots:
        if cache_dir.is_relative_to(root):
            raise ConfigError(
                f"data.cache_dir '{cache_dir}' is inside the dataset folder '{root}'; the cache "
                f"must live elsewhere (the dataset may be read-only)"
            )
    entry = entry_dir(cache_dir, source, split, size, resampling)
    stamp = fingerprint(source, names)
    try:
        hit = json.loads((entry / META).read_text()).get("fingerprint") == stamp
    except (OSError, ValueError):
        hit = False
    if not hit:
        log.info("building the %s %dpx cache of '%s' in %s", split, size, source.name, entry)
        _build(entry, source, names, resampling.resize(size), stamp, skip_bad)
    return entry, hit


class CachedDataset(SegmentationDataset):
    """:class:`SegmentationDataset` reading decoded, resized uint8 arrays from a cache entry
    instead of the image/mask files; the (random) ``transform`` still runs on every sample.

    The arrays are memory-mapped lazily in each process (workers included), so nothing large
    is pickled into worker processes and every process shares the OS page cache.
    """

    def __init__(
        self, source: SampleSource, names: Sequence[str], transform: Transform, entry: Path
    ) -> None:
        super().__init__(source, names, transform)
        self.entry = entry
        built = json.loads((entry / META).read_text())["names"]
        row = {name: i for i, name in enumerate(built)}
        self.rows = [row[name] for name in self.names]  # a subset when bad samples were skipped
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

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        images, masks = self.arrays()
        # copies: augmentations may write in place, and the maps are read-only
        row = self.rows[index]
        return np.array(images[row]), np.array(masks[row])
