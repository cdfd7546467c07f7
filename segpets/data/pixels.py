"""Pictures of every bit depth and colour mode as the 8-bit RGB that image viewers show, and
masks only in lossless formats.

PIL's ``convert("RGB")`` clips instead of scaling: a 16-bit grey PNG (values 0-65535) becomes
white, a float TIFF holding 0-1 black. :func:`to_rgb8` scales every single-channel mode of more
than 8 bits by its range instead:

==============================  ==============================================================
``I;16``, ``I;16L/B/N``         16-bit grey: 0-65535 (or the TIFF's ``BitsPerSample``, e.g. 12)
``I`` (32-bit integer)          the TIFF's ``BitsPerSample``/``SampleFormat``: unsigned 0-2³²-1,
                                signed 0-2³¹-1 (negative values read as 0); 0-65535 from
                                formats without 32-bit integer samples (PNG, PGM)
``F`` (32-bit float)            0-1, the float-image convention; 0-255 or 0-65535 when every
                                value lies there and some lie above 1 (PIL's own ``convert("F")``
                                writes 0-255); larger values are refused, naming the file
==============================  ==============================================================

A range the file declares (TIFF ``SMinSampleValue``/``SMaxSampleValue``) wins. Values are mapped
linearly, ``round((v - low) / (high - low) * 255)``, clipped to 0-255 (NaN reads as 0), and the
grey is repeated into R, G and B. A picture whose values vary but would read as one flat level
(16-bit data in a 32-bit container) is refused, naming the file, rather than read as black.
48/64-bit RGB(A) PNGs and TIFFs are reduced to 8 bits by PIL's decoder itself (the high byte of
each sample: ±1 of rounding); palette, ``LA``/``PA``, CMYK, YCbCr, LAB and 1-bit pictures go
through PIL's own conversions; alpha is dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from segpets.errors import DataError

GREY_16 = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
SCALED_MODES = GREY_16 | {"I", "F"}
FLOAT_RANGES = (1.0, 255.0, 65535.0)  # 0-1, then what 8- and 16-bit data become as floats
BITS_PER_SAMPLE, SAMPLE_FORMAT, SMIN_SAMPLE, SMAX_SAMPLE = 258, 339, 340, 341  # TIFF tags
SIGNED = 2  # SampleFormat: 1 unsigned integer, 2 signed integer, 3 float
# Lossy formats, by PIL's img.format
LOSSY_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG (MPO)"}


def to_rgb8(img: Image.Image, path: Path) -> np.ndarray:
    """(H, W, 3) uint8 of a decoded picture of any mode, as viewers show it (see the module
    docstring); ``DataError`` naming ``path`` for a float range it cannot tell or a picture
    that would read as one flat level."""
    if img.mode in SCALED_MODES:
        grey = scale_to_8bit(img, path)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode == "PA":  # no direct PA -> RGB conversion in PIL
        img = img.convert("RGBA")
    return np.asarray(img.convert("RGB"))


def scale_to_8bit(img: Image.Image, path: Path) -> np.ndarray:
    """(H, W) uint8 of a single-channel picture of more than 8 bits, scaled by its range."""
    values = _samples(img)
    low, high = value_range(img, values, path)
    scaled = (np.nan_to_num(values, nan=low) - low) * (255.0 / (high - low))
    out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    finite = values[np.isfinite(values)]
    if out.size and out.min() == out.max() and finite.size and finite.min() != finite.max():
        raise DataError(
            f"image '{path}' ({_describe(img)}) holds values {finite.min():g}..{finite.max():g}, "
            f"a sliver of its range {low:g}..{high:g}: it would read as one flat grey; save it "
            f"with 8 or 16 bits a sample (or declare its range: TIFF SMaxSampleValue)"
        )
    return out


def value_range(img: Image.Image, values: np.ndarray, path: Path) -> tuple[float, float]:
    """(low, high) sample values that map to 0 and 255 (see the module docstring)."""
    declared = _tag(img, SMIN_SAMPLE), _tag(img, SMAX_SAMPLE)
    if declared[1] is not None and declared[1] > (declared[0] or 0):
        return float(declared[0] or 0), float(declared[1])
    if img.mode == "F":
        finite = values[np.isfinite(values)]
        top = float(finite.max()) if finite.size else 0.0
        for high in FLOAT_RANGES:
            if top <= high:
                return 0.0, high
        raise DataError(
            f"image '{path}' (32-bit float) holds values up to {top:g} and declares no range "
            f"(TIFF SMaxSampleValue); segpets reads float pictures as 0-1, 0-255 or 0-65535: "
            f"save it with 8 or 16 bits a sample"
        )
    bits = _tag(img, BITS_PER_SAMPLE)
    if bits is None:  # only TIFF stores 32-bit integer pictures; PNG, PGM, ... at most 16 bits
        bits = 32 if img.mode == "I" and img.format == "TIFF" else 16
    if img.mode == "I" and _tag(img, SAMPLE_FORMAT) == SIGNED:
        return 0.0, float(2 ** (int(bits) - 1) - 1)
    return 0.0, float(2 ** int(bits) - 1)


def _samples(img: Image.Image) -> np.ndarray:
    """The picture's samples as float64 (exact for every 32-bit integer)."""
    values = np.asarray(img)
    if img.mode == "I" and _tag(img, SAMPLE_FORMAT) == 1 and _tag(img, BITS_PER_SAMPLE) == 32:
        values = values.view(np.uint32)  # unsigned 32-bit samples PIL keeps in int32 storage
    return values.astype(np.float64)


def _tag(img: Image.Image, tag: int) -> float | None:
    """A TIFF tag's (first) value, or ``None`` (no such tag, or not a TIFF)."""
    tags = getattr(img, "tag_v2", None)
    value = tags.get(tag) if tags is not None else None
    if isinstance(value, tuple):
        value = value[0] if value else None
    return float(value) if isinstance(value, (int, float)) else None


def _describe(img: Image.Image) -> str:
    kind = {"F": "32-bit float", "I": "32-bit integer"}.get(img.mode, "16-bit")
    return f"{kind}, PIL mode {img.mode}"


def check_lossless(path: Path, img: Image.Image) -> Image.Image:
    """``img`` if its file is not a JPEG, else ``DataError`` naming the file: lossy compression
    changes label values near every edge (a 0/255 mask saved as JPEG holds every value in
    between, which ``data.foreground=null`` reads as pet), and no label mapping can undo it.
    (PIL decodes every WebP as RGB, which the single-channel rule for masks refuses.)"""
    lossy = LOSSY_FORMATS.get(img.format or "")
    if lossy:
        raise DataError(
            f"mask '{path}' is a {lossy} file: lossy compression changes label values along "
            f"every edge; save masks in a lossless format (PNG, TIFF or BMP)"
        )
    return img
