"""Your own data: a folder of images and a folder of masks paired by file stem.

``cat_001.jpg`` ↔ ``<masks>/cat_001<mask_suffix><mask_ext>`` (default ``cat_001.png``). Images
in any format PIL reads; masks single-channel PNGs (0/255, 0/1 or label maps; palette PNGs are
read by index, as annotation tools write them). Which values are foreground, background and
ignored comes from the config. Splits come from files (one stem a line) or a seeded random
split that travels with every checkpoint (``state_dict``) and is written to the run folder.
"""

from __future__ import annotations

import csv
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from annotated_types import Ge, Len
from lightning.fabric.utilities.rank_zero import rank_zero_only
from PIL import Image

from segpets.checkpoints.paths import is_plain_name, plain_names
from segpets.command.outputs import atomic_write_text
from segpets.data.datamodule import SPLITS, SegmentationDataModule
from segpets.data.dataset import SampleSource
from segpets.data.files import read_lines, read_split
from segpets.errors import ConfigError, DataError
from segpets.labels import IGNORE_INDEX

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# single channel, read as stored (labels, never rescaled): 8 bit, palette by index, 16 and 32 bit
MASK_MODES = {"L", "P", "1", "I;16", "I;16L", "I;16B", "I;16N", "I"}


def _values(value: int | Sequence[int] | None) -> list[int] | None:
    if value is None:
        return None
    return [int(v) for v in ([value] if isinstance(value, int) else value)]


class FolderSource(SampleSource):
    """Image/mask pairs of two folders. A mask value in ``ignore`` → 255 (left out of loss
    and metrics), in ``background`` → 0, in ``foreground`` → 1 (``foreground=None``: every
    other value); any other value is an error naming the file."""

    def __init__(
        self,
        images: Path,
        masks: Path,
        mask_suffix: str = "",
        mask_ext: str = ".png",
        foreground: Sequence[int] | None = None,
        background: Sequence[int] = (0,),
        ignore: Sequence[int] | None = None,
    ) -> None:
        self.images, self.masks = images, masks
        self.mask_suffix, self.mask_ext = mask_suffix, mask_ext
        self.foreground, self.background = foreground, list(background)
        self.ignore = list(ignore or [])
        clash = set(self.background) & set(self.ignore) | set(foreground or []) & (
            set(self.background) | set(self.ignore)
        )
        if clash:
            raise ConfigError(
                f"data.foreground/background/ignore share the values {sorted(clash)}; "
                f"each mask value must have one meaning"
            )
        self.name, self.roots = images.name, (images, masks)
        self._image_files: dict[str, Path] | None = None

    def image_files(self) -> dict[str, Path]:
        """stem → image file of every image in ``images`` (not recursive)."""
        if self._image_files is None:
            files = [p for p in self.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
            self._image_files = {p.stem: p for p in sorted(files) if p.is_file()}
        return self._image_files

    def mask_file(self, stem: str) -> Path:
        return self.masks / f"{stem}{self.mask_suffix}{self.mask_ext}"

    def files(self, name: str) -> tuple[Path, Path]:
        """(image, mask) of the sample with file stem ``name``; a name with a folder part
        (``../x``, ``/x``, ``a/b``) is a ``DataError``: nothing outside the two folders is read."""
        if not is_plain_name(name):
            raise DataError(f"sample name {name!r} is not a file stem of data.images")
        image = self.image_files().get(name, self.images / f"{name}.<image>")
        return image, self.mask_file(name)

    def unpaired(self) -> tuple[list[Path], list[Path]]:
        """(images without a mask, masks without an image)."""
        images = self.image_files()
        lonely_images = [p for stem, p in images.items() if not self.mask_file(stem).is_file()]
        tail = f"{self.mask_suffix}{self.mask_ext}"
        mask_files = [p for p in self.masks.glob(f"*{tail}") if p.is_file()]
        lonely_masks = [p for p in sorted(mask_files) if p.name[: -len(tail)] not in images]
        return lonely_images, lonely_masks

    def mask_from_image(self, path: Path, img: Image.Image) -> np.ndarray:
        if img.mode not in MASK_MODES:
            raise DataError(
                f"mask '{path}' must be single-channel (8/16-bit grey or palette), "
                f"got mode {img.mode}"
            )
        values = np.asarray(img).astype(np.int64)
        mask = np.ones(values.shape, np.uint8)
        known = np.isin(values, self.background) | np.isin(values, self.ignore)
        if self.foreground is not None:
            outside = np.setdiff1d(np.unique(values[~known]), self.foreground)
            if outside.size:
                raise DataError(
                    f"mask '{path}' has values {outside.tolist()[:10]} outside foreground "
                    f"{list(self.foreground)}, background {self.background} and ignore "
                    f"{self.ignore} (data.foreground/background/ignore)"
                )
        mask[np.isin(values, self.background)] = 0
        mask[np.isin(values, self.ignore)] = IGNORE_INDEX
        return mask

    @property
    def cache_key(self) -> str:
        labels = f"fg={self.foreground} bg={self.background} ignore={self.ignore}"
        return f"{self.images}\0{self.masks}\0{self.mask_suffix}{self.mask_ext}\0{labels}"


class FolderDataModule(SegmentationDataModule):
    """Images and masks paired by stem (see :class:`FolderSource`). Splits: the files given in
    ``splits`` (``{train, val, test}``, one stem a line), else a random split of all pairs by
    ``split_fractions`` (train, val, test) drawn with ``split_seed``. The split is saved in
    every checkpoint (Lightning calls :meth:`state_dict`) and restored by resume and
    ``segpets.eval``, and written to ``split_dir`` as ``{train,val,test}.txt``. ``groups``: a
    CSV of ``stem,group`` lines for the eval report's per-group table."""

    def __init__(
        self,
        images: str | Path,
        masks: str | Path,
        mask_suffix: str = "",
        mask_ext: str = ".png",
        foreground: int | Sequence[int] | None = None,
        background: int | Sequence[int] = 0,
        ignore: int | Sequence[int] | None = None,
        splits: dict[str, str | None] | None = None,
        split_fractions: Annotated[Sequence[Annotated[float, Ge(0)]], Len(3, 3)] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        split_dir: str | Path | None = None,
        groups: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(images).expanduser().resolve()
        masks_dir = Path(masks).expanduser().resolve()
        self.source = FolderSource(
            self.root, masks_dir, mask_suffix, mask_ext,
            _values(foreground), _values(background) or [], _values(ignore),
        )  # fmt: skip
        self.split_files = {k: v for k, v in (splits or {}).items() if v}
        unknown = set(self.split_files) - set(SPLITS)
        if unknown:
            raise ConfigError(f"data.splits: unknown split(s) {sorted(unknown)}; use {SPLITS}")
        fractions = [float(f) for f in split_fractions]
        if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
            raise ConfigError(
                f"data.split_fractions must be 3 fractions (train, val, test) summing to 1, "
                f"got {list(split_fractions)}"
            )
        self.split_fractions, self.split_seed = fractions, int(split_seed)
        self.split_dir = Path(split_dir) if split_dir else None
        self.groups = Path(groups).expanduser().resolve() if groups else None
        if self.groups and not self.groups.is_file():
            raise DataError(f"data.groups: no such file '{self.groups}'")
        self._splits: dict[str, list[str]] | None = None

    def check_layout(self) -> None:
        for key, folder in (("data.images", self.source.images), ("data.masks", self.source.masks)):
            if not folder.is_dir():
                raise DataError(f"{key}: no such folder '{folder}'")

    def splits(self) -> dict[str, list[str]]:
        if self._splits is None:
            self.check_layout()
            self._splits = self._read_or_draw_splits()
        return self._splits

    def setup(self, stage: str | None = None) -> None:
        """Lightning's ``setup``, once the run is accepted: the split is written then (a run
        refused by a check writes nothing)."""
        super().setup(stage)
        if rank_zero_only.rank == 0:
            self._write_splits()

    def _read_or_draw_splits(self) -> dict[str, list[str]]:
        if self.split_files:
            return {s: read_split(Path(self.split_files[s])) if s in self.split_files else []
                    for s in SPLITS}  # fmt: skip
        stems = self._paired_stems()
        random.Random(self.split_seed).shuffle(stems)
        n_val = round(self.split_fractions[1] * len(stems))
        n_test = round(self.split_fractions[2] * len(stems))
        n_train = len(stems) - n_val - n_test
        return {
            "train": stems[:n_train],
            "val": stems[n_train : n_train + n_val],
            "test": stems[n_train + n_val :],
        }

    def _paired_stems(self) -> list[str]:
        """Sorted stems with both files; unpaired files are an error naming them (or, with
        ``bad_samples=skip``, a warning)."""
        lonely_images, lonely_masks = self.source.unpaired()
        problems = [
            f"'{p}' (no mask '{self.source.mask_file(p.stem).name}')" for p in lonely_images
        ]
        problems += [f"'{p}' (a mask without an image)" for p in lonely_masks]
        if problems and self.bad_samples == "fail":
            shown = ", ".join(problems[:10]) + (
                f" and {len(problems) - 10} more" if len(problems) > 10 else ""
            )
            raise DataError(
                f"{len(problems)} unpaired files in data.images/data.masks: {shown}; "
                f"data.bad_samples=skip would leave them out"
            )
        if problems:
            log.warning(
                "data.bad_samples=skip: leaving out unpaired files: %s", "; ".join(problems)
            )
        lonely = {p.stem for p in lonely_images}
        return sorted(stem for stem in self.source.image_files() if stem not in lonely)

    def write_splits(self, folder: str | Path) -> None:
        """Write the split used to ``folder`` as ``{train,val,test}.txt`` (and keep writing
        there): ``segpets.eval`` does once its checks have passed."""
        self.split_dir = Path(folder)
        self.splits()
        self._write_splits()

    def _write_splits(self) -> None:
        if self.split_dir is None:
            return
        for split, names in self.splits().items():
            atomic_write_text(self.split_dir / f"{split}.txt", "".join(f"{n}\n" for n in names))

    def empty_split_message(self, split: str) -> str:
        if self.split_files:
            where = self.split_files.get(split, f"no data.splits.{split}")
            return f"the {split} split is empty ({where})"
        return (
            f"the {split} split is empty: {sum(map(len, self.splits().values()))} pairs split by "
            f"data.split_fractions={self.split_fractions}"
        )

    # --- the split travels with checkpoints ----------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"splits": self.splits()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Use the split a checkpoint was trained with (resume, ``segpets.eval``); anything
        but lists of names is refused, and a name that is not a file stem (``../x``, an
        absolute path) is dropped with a warning (a checkpoint is data from elsewhere)."""
        splits = state_dict.get("splits") if isinstance(state_dict, dict) else None
        if not isinstance(splits, dict) or not all(
            isinstance(splits.get(s, []), list)
            and all(isinstance(n, str) for n in splits.get(s, []))
            for s in SPLITS
        ):
            raise ConfigError("ckpt_path: the checkpoint's data split is not lists of names")
        names = [(s, n) for s in SPLITS for n in splits.get(s, [])]
        kept = set(plain_names([n for _, n in names], "ckpt_path: the checkpoint's data split"))
        self._splits = {s: [n for n in splits.get(s, []) if n in kept] for s in SPLITS}
        self.datasets.clear()
        if self.trainer is not None and rank_zero_only.rank == 0:
            self._write_splits()  # Lightning restores it after setup: the split used

    def sample_labels(self, names: list[str]) -> dict[str, dict[str, str]]:
        if self.groups is None:
            return super().sample_labels(names)
        groups: dict[str, str] = {}
        for line in read_lines(self.groups, "data.groups file"):
            try:
                row = next(csv.reader([line]))
            except csv.Error as err:  # e.g. a NUL byte: not a text CSV
                raise DataError(f"data.groups: '{self.groups}' is not a CSV file: {err}") from None
            if len(row) >= 2 and row[:2] != ["stem", "group"]:
                groups[row[0].strip()] = row[1].strip()
        return {n: {"group": groups.get(n, "(no group)")} for n in names}
