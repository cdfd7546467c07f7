"""Reading images, masks and list files as any tool writes them, every failure naming its file.

Masks are decoded into the labels of :mod:`segpets.labels` by each dataset's source.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from segpets.data.pixels import to_rgb8
from segpets.errors import DataError

log = logging.getLogger(__name__)


def read_lines(path: Path, kind: str = "split file") -> list[str]:
    """Stripped lines of a text file written by any tool: a UTF-8 byte-order mark, CRLF or CR
    line ends, blank lines and ``#`` comments are dropped; ``DataError`` naming the file (as
    ``kind``) if it is missing or not UTF-8 text."""
    if not path.is_file():
        raise DataError(f"{kind} not found: '{path}'")
    try:
        text = path.read_text(encoding="utf-8-sig")  # drops a byte-order mark if there is one
    except UnicodeDecodeError as err:
        raise DataError(f"{kind} '{path}' is not UTF-8 text: {err}") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def read_split(path: Path) -> list[str]:
    """Sample names of a split or list file (the first word of each line, see
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


def decode(path: Path, to_array: Callable[[Image.Image], np.ndarray]) -> np.ndarray:
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
    """(H, W, 3) uint8 as viewers show the picture: GIF/palette/RGBA/grayscale/CMYK become RGB
    (alpha is dropped), 16-bit, 32-bit integer and float pictures are scaled by their range
    (:func:`segpets.data.pixels.to_rgb8`), never clipped.

    ``upright=False`` (datasets: their masks are aligned to the stored pixels) keeps the
    stored pixels; ``upright=True`` (new photos, ``segpets.predict``) applies the EXIF
    Orientation tag (values 1-8) as viewers do, so (H, W) is the displayed size."""

    def rgb(img: Image.Image) -> np.ndarray:
        return to_rgb8(ImageOps.exif_transpose(img) if upright else img, path)

    return decode(path, rgb).astype(np.uint8, copy=False)


def header_problems(path: Path) -> tuple[list[str], tuple[int, int] | None, int]:
    """(problems, (W, H), bands) of an image file from its header alone (~20 µs): missing,
    empty, not an image, over the decompression-bomb limit; each problem names the file."""
    if not path.is_file():
        return [f"'{path}' (missing)"], None, 0
    if path.stat().st_size == 0:
        return [f"'{path}' (empty file)"], None, 0
    try:
        with Image.open(path) as img:  # reads the header only
            return [], img.size, len(img.getbands())
    except Image.DecompressionBombError:
        return [f"'{path}' (over the decompression-bomb limit)"], None, 0
    except Exception:
        return [f"'{path}' (not an image)"], None, 0


def size_mismatch(image: Path, image_size, mask: Path, mask_size, mask_kind: str) -> list[str]:
    """One problem naming ``image`` when its (W, H) differs from its mask's."""
    if image_size is None or mask_size is None or image_size == mask_size:
        return []
    (w, h), (mw, mh) = image_size, mask_size
    return [f"'{image}' ({w}x{h}, but its {mask_kind} is {mw}x{mh})"]
