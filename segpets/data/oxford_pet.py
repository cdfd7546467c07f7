"""Oxford-IIIT Pet in its official layout, read defensively.

``images/<name>.jpg``, ``annotations/trimaps/<name>.png`` (1 pet, 2 background, 3 border) and
split files ``annotations/{trainval,test}.txt`` with lines ``<name> <class> <species> <breed>``.
The real files include GIF, palette, RGBA, grayscale and CMYK images named ``.jpg``; every one
is converted to RGB, and every failure names its file.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from annotated_types import Ge
from PIL import Image

from segpets.data.datamodule import SegmentationDataModule
from segpets.data.dataset import SampleSource
from segpets.data.files import decode, read_lines, read_split
from segpets.data.pixels import check_lossless
from segpets.errors import ConfigError, DataError
from segpets.labels import IGNORE_INDEX

log = logging.getLogger(__name__)

TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER = 1, 2, 3
# what trimap value 3 ("not classified" in the dataset's readme) becomes: data.border
BORDER_LABELS = {"pet": 1, "background": 0, "ignore": IGNORE_INDEX}
SPECIES = {"1": "cat", "2": "dog"}  # list.txt's species column
TORCHVISION_FOLDER = "oxford-iiit-pet"  # torchvision's OxfordIIITPet writes <root>/oxford-iiit-pet


def image_path(root: Path, name: str) -> Path:
    return root / "images" / f"{name}.jpg"


def trimap_path(root: Path, name: str) -> Path:
    return root / "annotations" / "trimaps" / f"{name}.png"


def split_every_nth(names: Sequence[str], every: int) -> tuple[list[str], list[str]]:
    """(train, val): every ``every``-th line (the 10th, 20th, …) goes to validation.

    With ``every=10`` this gives 3312/368 on the full trainval list, 180/20 on the mini set.
    """
    if every < 2:
        raise DataError(f"data.val_every must be >= 2, got {every}")
    val = [n for i, n in enumerate(names, 1) if i % every == 0]
    train = [n for i, n in enumerate(names, 1) if i % every != 0]
    return train, val


def trimap_levels(path: Path, img: Image.Image) -> np.ndarray:
    """(H, W) values of a decoded trimap. A palette (mode P) PNG stores palette indices and
    shows their colours; what it shows is the trimap, so a grey palette is decoded through it
    (index → grey level); any other palette is refused, naming the file."""
    if img.mode != "P":
        return np.asarray(img)
    indices = np.asarray(img)
    palette = np.asarray(img.getpalette("RGB") or [], np.uint8).reshape(-1, 3)
    used = np.unique(indices)
    if used.max() >= len(palette) or not (palette[used] == palette[used, :1]).all():
        colours = [tuple(int(c) for c in palette[i]) for i in used[:4] if i < len(palette)]
        raise DataError(
            f"trimap '{path}' is a palette image whose colours are not grey levels "
            f"(index → RGB: {dict(zip(used.tolist(), colours, strict=False))}); a trimap "
            f"holds 1 pet, 2 background, 3 border: save it as 8-bit grayscale"
        )
    return palette[:, 0][indices]


def check_trimap(path: Path, trimap: np.ndarray) -> np.ndarray:
    """``trimap`` if it is (H, W) with values in {1, 2, 3}, else ``DataError`` naming it."""
    if trimap.ndim != 2:
        raise DataError(f"trimap '{path}' must be single-channel, got shape {trimap.shape}")
    bad = np.setdiff1d(np.unique(trimap), [TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER])
    if bad.size:
        raise DataError(f"trimap '{path}' has values {bad.tolist()[:10]} outside {{1, 2, 3}}")
    return trimap


def load_trimap(path: Path) -> np.ndarray:
    """(H, W) uint8 trimap with values in {1, 2, 3} (palette PNGs decoded through their grey
    palette); ``DataError`` naming the file for more than one channel or other values."""
    return decode(
        path, lambda img: check_trimap(path, trimap_levels(path, check_lossless(path, img)))
    )


def trimap_to_mask(trimap: np.ndarray, border: str = "pet") -> np.ndarray:
    """(H, W) uint8 mask: pet (1) → 1, background (2) → 0, border (3) → ``BORDER_LABELS``
    [border] (the seed: pet; or background, or 255 = ignored by loss and metrics)."""
    mask = (trimap == TRIMAP_PET).astype(np.uint8)
    mask[trimap == TRIMAP_BORDER] = BORDER_LABELS[border]
    return mask


def load_mask(path: Path, border: str = "pet") -> np.ndarray:
    """(H, W) uint8 mask of a trimap file (see :func:`trimap_to_mask`)."""
    return trimap_to_mask(load_trimap(path), border)


def species_and_breeds(root: Path, names: Iterable[str]) -> dict[str, tuple[str, str]]:
    """name → (species, breed) from ``annotations/list.txt`` (``<name> <class> <species>
    <breed id>``, species 1 = cat, 2 = dog). The breed is the name without its trailing
    ``_<number>``. Names not in list.txt (or no list.txt) fall back to the dataset's naming
    rule: capitalised names are cats, lower-case ones dogs."""
    listed: dict[str, str] = {}
    list_file = root / "annotations" / "list.txt"
    if list_file.is_file():
        for line in read_lines(list_file):  # byte-order marks, CRLF and # comments handled
            parts = line.split()
            if len(parts) >= 3:
                listed[parts[0]] = SPECIES.get(parts[2], "unknown")
    return {
        n: (listed.get(n) or ("cat" if n[:1].isupper() else "dog"), n.rsplit("_", 1)[0])
        for n in names
    }


class OxfordPetSource(SampleSource):
    """Samples of an official-layout root; ``border`` says what trimap value 3 becomes."""

    mask_kind = "trimap"

    def __init__(self, root: Path, border: str = "pet") -> None:
        if border not in BORDER_LABELS:
            raise ConfigError(f"data.border must be one of pet, background, ignore; got '{border}'")
        self.root, self.border = root, border
        self.name, self.roots = root.name, (root,)

    def files(self, name: str) -> tuple[Path, Path]:
        return image_path(self.root, name), trimap_path(self.root, name)

    def mask_from_image(self, path: Path, img: Image.Image) -> np.ndarray:
        return trimap_to_mask(check_trimap(path, trimap_levels(path, img)), self.border)

    @property
    def cache_key(self) -> str:
        return f"{self.root}\0border={self.border}"


class PetDataModule(SegmentationDataModule):
    """Oxford-IIIT Pet: train/val from ``annotations/trainval.txt`` (every ``val_every``-th
    line is validation), test from ``annotations/test.txt``; ``border`` is what the trimaps'
    border (value 3) counts as: ``pet`` (the seed), ``background`` or ``ignore``. Other
    arguments: :class:`SegmentationDataModule`."""

    def __init__(
        self,
        root: str | Path,
        val_every: Annotated[int, Ge(2)] = 10,
        download: bool = False,
        allow_test_overlap: bool = False,
        border: Literal["pet", "background", "ignore"] = "pet",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser().resolve()
        self.val_every, self.download = val_every, download
        self.allow_test_overlap = allow_test_overlap
        self.source = OxfordPetSource(self.root, border)
        self._splits: dict[str, list[str]] | None = None

    # --- data on disk -------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.download and not self._layout_ok():
            self._download()
        self.check_layout()

    def _layout_ok(self) -> bool:
        ann = self.root / "annotations"
        return (self.root / "images").is_dir() and (ann / "trainval.txt").is_file()

    def check_layout(self) -> None:
        if not self._layout_ok():
            raise DataError(
                f"Oxford-IIIT Pet not found at '{self.root}' (expected images/ and "
                f"annotations/trainval.txt there); set data.root=/path/to/oxford-iiit-pet, "
                f"or data.download=true to fetch it with torchvision"
            )

    def _download(self) -> None:
        from torchvision.datasets import OxfordIIITPet

        if self.root.name != TORCHVISION_FOLDER:
            raise ConfigError(
                f"data.download=true writes to <dir>/{TORCHVISION_FOLDER} (torchvision's layout); "
                f"set data.root to a path ending in '{TORCHVISION_FOLDER}', got '{self.root}'"
            )
        missing = [p for p in (self.root, *self.root.parents) if not p.exists()]
        try:
            OxfordIIITPet(self.root.parent, target_types="segmentation", download=True)
        except BaseException as err:
            for folder in missing:  # deepest first: the folders it made, if still empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
            if not isinstance(err, OSError):
                raise
            raise DataError(  # URLError/HTTPError when offline
                f"downloading Oxford-IIIT Pet to '{self.root}' failed ({err}); download it "
                f"elsewhere and set data.root=/path/to/oxford-iiit-pet"
            ) from err

    # --- splits -------------------------------------------------------------------------
    def split_names(self, split: str) -> list[str]:
        if split == "test" and not (self.root / "annotations" / "test.txt").is_file():
            read_split(self.root / "annotations" / "test.txt")  # "split file not found: ..."
        return super().split_names(split)

    def splits(self) -> dict[str, list[str]]:
        """{train, val, test} names, read once: every ``val_every``-th trainval line is
        validation (no test.txt: no test names). A train or validation image that is also a
        test image makes the test metrics partly training metrics: ``DataError`` naming them,
        unless ``data.allow_test_overlap=true``."""
        if self._splits is None:
            ann = self.root / "annotations"
            trainval = read_split(ann / "trainval.txt")
            test = read_split(ann / "test.txt") if (ann / "test.txt").is_file() else []
            train, val = split_every_nth(trainval, self.val_every)
            overlap = sorted(set(trainval) & set(test))
            if overlap and not self.allow_test_overlap:
                shown = ", ".join(overlap[:10]) + (" ..." if len(overlap) > 10 else "")
                raise DataError(
                    f"{len(overlap)} name(s) of '{ann / 'trainval.txt'}' are also in "
                    f"'{ann / 'test.txt'}' ({shown}): test metrics on training images are "
                    f"not test metrics; fix the split files, or set data.allow_test_overlap=true"
                )
            self._splits = {"train": train, "val": val, "test": test}
        return self._splits

    def empty_split_message(self, split: str) -> str:
        ann = self.root / "annotations"
        if split == "test":
            return f"the test split is empty: '{ann / 'test.txt'}' lists no images"
        listed = len(self.split_names("train")) + len(self.split_names("val"))
        return (
            f"the {split} split is empty: '{ann / 'trainval.txt'}' lists {listed} image(s) and "
            f"data.val_every={self.val_every} makes every {self.val_every}th a validation "
            f"image; list more images or lower data.val_every"
        )

    def sample_labels(self, names: list[str]) -> dict[str, dict[str, str]]:
        labels = species_and_breeds(self.root, names)
        return {n: {"species": labels[n][0], "breed": labels[n][1]} for n in names}


# --- the Oxford layout's sample-level helpers (tests, scripts, the fuzzer) ------------------
def load_pair(root: Path, name: str, border: str = "pet") -> tuple[np.ndarray, np.ndarray]:
    """Image and mask of one sample, checked to have the same H×W."""
    return OxfordPetSource(root, border).load_pair(name)


def scan_sample(root: Path, name: str) -> list[str]:
    """Problems of one sample found before training (see :meth:`SampleSource.scan`)."""
    return OxfordPetSource(root).scan(name)[0]
