"""Oxford-IIIT Pet in its official layout, read defensively.

``images/<name>.jpg``, ``annotations/trimaps/<name>.png`` (1 pet, 2 background, 3 border) and
split files ``annotations/{trainval,test}.txt`` with lines ``<name> <class> <species> <breed>``.
The real files include GIF, palette, RGBA, grayscale and CMYK images named ``.jpg``; every one
is converted to RGB here, and every failure names its file.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset, default_collate

from segpets.errors import DataError

log = logging.getLogger(__name__)

TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER = 1, 2, 3
SPLIT_FILES = {"trainval": "trainval.txt", "test": "test.txt"}


def image_path(root: Path, name: str) -> Path:
    return root / "images" / f"{name}.jpg"


def trimap_path(root: Path, name: str) -> Path:
    return root / "annotations" / "trimaps" / f"{name}.png"


def read_lines(path: Path) -> list[str]:
    """Stripped lines of a text file written by any tool: a UTF-8 byte-order mark, CRLF or CR
    line ends, blank lines and ``#`` comments are dropped; ``DataError`` if it is missing."""
    if not path.is_file():
        raise DataError(f"split file not found: '{path}'")
    try:
        text = path.read_text(encoding="utf-8-sig")  # drops a byte-order mark if there is one
    except UnicodeDecodeError as err:
        raise DataError(f"split file '{path}' is not UTF-8 text: {err}") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def read_split(path: Path) -> list[str]:
    """Image names of a split or list file (the first word of each line, see
    :func:`read_lines`), in file order (validation depends on it); macOS ``._*`` resource-fork
    entries are ignored, and a name listed twice is kept once, with a warning naming it."""
    names = [line.split()[0] for line in read_lines(path)]
    names = [name for name in names if not name.startswith("._")]
    unique = list(dict.fromkeys(names))
    if len(unique) < len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        log.warning(
            "split file '%s' lists %d name(s) more than once, used once each: %s",
            path, len(repeated), ", ".join(repeated[:20]) + (" ..." if len(repeated) > 20 else ""),
        )  # fmt: skip
    return unique


def split_every_nth(names: Sequence[str], every: int) -> tuple[list[str], list[str]]:
    """(train, val): every ``every``-th line (the 10th, 20th, …) goes to validation.

    With ``every=10`` this gives 3312/368 on the full trainval list, 180/20 on the mini set.
    """
    if every < 2:
        raise DataError(f"data.val_every must be >= 2, got {every}")
    val = [n for i, n in enumerate(names, 1) if i % every == 0]
    train = [n for i, n in enumerate(names, 1) if i % every != 0]
    return train, val


def _decode(path: Path, to_array: Callable[[Image.Image], np.ndarray]) -> np.ndarray:
    """``to_array`` of the fully decoded image at ``path``, or ``DataError`` naming the file:
    PIL raises many exception types on malformed files (OSError, SyntaxError, EOFError,
    struct.error, IndexError, ...; tests/test_fuzz.py feeds it thousands)."""
    try:
        with Image.open(path) as img:
            img.load()  # decode now so truncated files fail here, with the file name
            return to_array(img)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"file not found: '{path}'") from None
    except Image.DecompressionBombError as err:
        raise DataError(f"image '{path}' exceeds the decompression-bomb limit: {err}") from None
    except UnidentifiedImageError:
        raise DataError(f"cannot read image '{path}': not an image file PIL can identify") from None
    except Exception as err:  # any decoder failure means this file is broken
        raise DataError(f"cannot read image '{path}': {type(err).__name__}: {err}") from None


def load_rgb(path: Path, upright: bool = False) -> np.ndarray:
    """(H, W, 3) uint8; GIF/palette/RGBA/grayscale/CMYK all become RGB (alpha is dropped).

    ``upright=False`` (the dataset: its trimaps are aligned to the stored pixels) keeps the
    stored pixels; ``upright=True`` (new photos, ``segpets.predict``) applies the EXIF
    Orientation tag (values 1-8) as viewers do, so (H, W) is the displayed size."""

    def rgb(img: Image.Image) -> np.ndarray:
        return np.asarray((ImageOps.exif_transpose(img) if upright else img).convert("RGB"))

    return _decode(path, rgb).astype(np.uint8, copy=False)


def _trimap_levels(path: Path, img: Image.Image) -> np.ndarray:
    """(H, W) trimap values of a decoded trimap. A palette (mode P) PNG stores palette indices
    and shows their colours; what it shows is the trimap, so a grey palette is decoded
    through it (index → grey level); any other palette is refused, naming the file."""
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


def load_trimap(path: Path) -> np.ndarray:
    """(H, W) uint8 trimap with values in {1, 2, 3} (palette PNGs decoded through their grey
    palette); ``DataError`` naming the file for more than one channel or other values."""
    trimap = _decode(path, lambda img: _trimap_levels(path, img))
    if trimap.ndim != 2:
        raise DataError(f"trimap '{path}' must be single-channel, got shape {trimap.shape}")
    bad = np.setdiff1d(np.unique(trimap), [TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER])
    if bad.size:
        raise DataError(f"trimap '{path}' has values {bad.tolist()[:10]} outside {{1, 2, 3}}")
    return trimap


def load_mask(path: Path) -> np.ndarray:
    """(H, W) uint8 binary mask: trimap pet (1) and border (3) → 1, background (2) → 0."""
    return (load_trimap(path) != TRIMAP_BACKGROUND).astype(np.uint8)


def scan_sample(root: Path, name: str) -> list[str]:
    """Problems of one sample, each naming its file, found before training: the image from
    its header alone (missing, empty, not an image, over the decompression-bomb limit, a size
    other than its trimap's), the trimap fully decoded (~1 ms: also unreadable data, more
    than one channel, values outside {1, 2, 3}, a palette that is not grey). Truncated image
    data is only seen when the sample is decoded (:func:`load_pair`)."""
    return scan_sample_and_mask(root, name)[0]


def scan_sample_and_mask(root: Path, name: str) -> tuple[list[str], bool]:
    """(:func:`scan_sample`'s problems, whether the trimap has no pet pixel at all)."""
    problems, sizes, no_pet = [], {}, False
    for kind, path in (("image", image_path(root, name)), ("trimap", trimap_path(root, name))):
        if not path.is_file():
            problems.append(f"'{path}' (missing)")
        elif path.stat().st_size == 0:
            problems.append(f"'{path}' (empty file)")
        else:
            try:
                with Image.open(path) as img:  # reads the header only
                    sizes[kind], bands = img.size, len(img.getbands())
            except Image.DecompressionBombError:
                problems.append(f"'{path}' (over the decompression-bomb limit)")
                continue
            except Exception:
                problems.append(f"'{path}' (not an image)")
                continue
            if kind == "trimap" and bands != 1:
                problems.append(f"'{path}' (trimap with {bands} channels, expected 1)")
            elif kind == "trimap":
                try:
                    no_pet = not (load_trimap(path) != TRIMAP_BACKGROUND).any()
                except DataError as err:
                    problems.append(str(err))
    if len(sizes) == 2 and sizes["image"] != sizes["trimap"]:
        (w, h), (tw, th) = sizes["image"], sizes["trimap"]
        problems.append(f"'{image_path(root, name)}' ({w}x{h}, but its trimap is {tw}x{th})")
    return problems, no_pet and not problems


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


class TorchSeeded:
    """An albumentations pipeline re-seeded from torch's RNG for every sample.

    Albumentations 2 ignores the global seeds (each ``Compose`` owns its generator), so on its
    own the augmentations differ between two runs with the same ``seed=``, repeat across
    DataLoader workers (forked copies of one generator), and cannot be restored on resume.
    Torch's RNG is seeded by ``seed_everything``, per worker by the DataLoader, and saved in
    checkpoints by :class:`segpets.callbacks.resume.ExactResume`, so all three hold here.
    """

    def __init__(self, transform: Transform) -> None:
        self.transform = transform

    def __call__(self, **data: Any) -> dict:
        seed = int(torch.randint(2**31 - 1, ()).item())
        # one generator pair shared by every transform (set_random_seed makes one per transform)
        self.transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
        return self.transform(**data)


def collate_skipping_bad(batch: list[dict | None]) -> dict:
    """``default_collate`` of the samples that loaded (``None`` marks a skipped bad one)."""
    kept = [sample for sample in batch if sample is not None]
    if not kept:
        raise DataError(f"all {len(batch)} samples of a batch are bad (see the warnings above)")
    return default_collate(kept)


class PetSegmentationDataset(Dataset):
    """Samples ``{"image": float (3,H,W), "mask": float (1,H,W), "name": str}``.

    ``transform`` is an albumentations pipeline called as ``transform(image=, mask=)`` that
    ends in ``ToTensorV2``; it is applied jointly so image and mask stay aligned.
    """

    def __init__(
        self, root: str | Path, names: Sequence[str], transform: Transform, skip_bad: bool = False
    ) -> None:
        self.root = Path(root)
        self.names = list(names)
        self.transform = transform
        self.skip_bad = skip_bad  # data.bad_samples=skip: a sample that fails to decode → None

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict:
        name = self.names[index]
        try:
            image, mask = load_pair(self.root, name)
        except DataError as err:
            if not self.skip_bad:
                raise
            log.warning("skipping a bad sample (data.bad_samples=skip): %s", err)
            return None  # dropped by collate_skipping_bad
        out = self.transform(image=image, mask=mask)
        return {
            "image": out["image"],
            "mask": torch.as_tensor(out["mask"]).unsqueeze(0).float(),
            "name": name,
        }
