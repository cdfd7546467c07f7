"""Oxford-IIIT Pet in its official layout, read defensively.

``images/<name>.jpg``, ``annotations/trimaps/<name>.png`` (1 pet, 2 background, 3 border) and
split files ``annotations/{trainval,test}.txt`` with lines ``<name> <class> <species> <breed>``.
The real files include GIF, palette, RGBA, grayscale and CMYK images named ``.jpg``; every one
is converted to RGB here, and every failure names its file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from segpets.errors import DataError

TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER = 1, 2, 3
SPLIT_FILES = {"trainval": "trainval.txt", "test": "test.txt"}


def image_path(root: Path, name: str) -> Path:
    return root / "images" / f"{name}.jpg"


def trimap_path(root: Path, name: str) -> Path:
    return root / "annotations" / "trimaps" / f"{name}.png"


def read_split(path: Path) -> list[str]:
    """Image names of a split or list file; ``#`` comments, blank lines and macOS ``._*``
    resource-fork entries are ignored, order is kept (validation depends on it)."""
    if not path.is_file():
        raise DataError(f"split file not found: '{path}'")
    names = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name = line.split()[0]
        if not name.startswith("._"):
            names.append(name)
    return names


def split_every_nth(names: Sequence[str], every: int) -> tuple[list[str], list[str]]:
    """(train, val): every ``every``-th line (the 10th, 20th, …) goes to validation.

    With ``every=10`` this gives 3312/368 on the full trainval list, 180/20 on the mini set.
    """
    if every < 2:
        raise DataError(f"data.val_every must be >= 2, got {every}")
    val = [n for i, n in enumerate(names, 1) if i % every == 0]
    train = [n for i, n in enumerate(names, 1) if i % every != 0]
    return train, val


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()  # decode now so truncated files fail here, with the file name
        return img
    except FileNotFoundError:
        raise DataError(f"file not found: '{path}'") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"cannot read image '{path}': {err}") from None
    except Image.DecompressionBombError as err:
        raise DataError(f"image '{path}' exceeds the decompression-bomb limit: {err}") from None


def load_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8; GIF/palette/RGBA/grayscale/CMYK all become RGB (alpha is dropped)."""
    return np.asarray(_open(path).convert("RGB"), dtype=np.uint8)


def load_mask(path: Path) -> np.ndarray:
    """(H, W) uint8 binary mask: trimap pet (1) and border (3) → 1, background (2) → 0."""
    trimap = np.asarray(_open(path))
    if trimap.ndim != 2:
        raise DataError(f"trimap '{path}' must be single-channel, got shape {trimap.shape}")
    bad = np.setdiff1d(np.unique(trimap), [TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER])
    if bad.size:
        raise DataError(f"trimap '{path}' has values {bad.tolist()} outside {{1, 2, 3}}")
    return (trimap != TRIMAP_BACKGROUND).astype(np.uint8)


def load_pair(root: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Image and mask of one sample, checked to have the same H×W."""
    image, mask = load_rgb(image_path(root, name)), load_mask(trimap_path(root, name))
    if image.shape[:2] != mask.shape:
        raise DataError(
            f"'{image_path(root, name)}' is {image.shape[1]}x{image.shape[0]} but its trimap "
            f"is {mask.shape[1]}x{mask.shape[0]}"
        )
    return image, mask


Transform = Callable[..., dict]


class PetSegmentationDataset(Dataset):
    """Samples ``{"image": float (3,H,W), "mask": float (1,H,W), "name": str}``.

    ``transform`` is an albumentations pipeline called as ``transform(image=, mask=)`` that
    ends in ``ToTensorV2``; it is applied jointly so image and mask stay aligned.
    """

    def __init__(self, root: str | Path, names: Sequence[str], transform: Transform) -> None:
        self.root = Path(root)
        self.names = list(names)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict:
        name = self.names[index]
        image, mask = load_pair(self.root, name)
        out = self.transform(image=image, mask=mask)
        return {
            "image": out["image"],
            "mask": torch.as_tensor(out["mask"]).unsqueeze(0).float(),
            "name": name,
        }
