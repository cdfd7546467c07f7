"""The eval report's breakdown rows (per species/breed/group) and its worst-image panels."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from segpets.command.outputs import atomic_write
from segpets.evaluation.overlays import IGNORED_RGB, draw_outcomes


def group_rows(records: list[dict], key: str) -> list[dict]:
    """One row per value of ``key`` (species or breed) with the mean of every per-image score,
    sorted worst (lowest mean per-image Dice) first."""
    scores = [k for k, v in records[0].items() if isinstance(v, float)] if records else []
    groups: dict[str, list[dict]] = {}
    for rec in records:
        groups.setdefault(rec[key], []).append(rec)
    rows = []
    for value, recs in groups.items():
        row: dict = {key: value, "images": len(recs)}
        if key == "breed":
            row["species"] = recs[0]["species"]
        for score in scores:
            row[score] = round(statistics.fmean(r[score] for r in recs), 6)
        row["dice_min"] = round(min(r["dice"] for r in recs), 6)
        rows.append(row)
    return sorted(rows, key=lambda r: (r["dice"], r[key]))


def overlay_panel(
    image: np.ndarray, truth: np.ndarray, pred: np.ndarray, ignored: np.ndarray | None = None
) -> np.ndarray:
    """image | ground truth | prediction over the image, in the palette of
    :mod:`segpets.evaluation.overlays` (true pet green, false pet red, missed pet blue);
    (H, W, 3) uint8 and (H, W) bool masks → (H, 3W + 8, 3) uint8. The ground truth is drawn
    black/white, its ``ignored`` pixels (left out of every metric) grey; the prediction leaves
    them untinted."""
    ignored = np.zeros_like(truth) if ignored is None else ignored
    chw = torch.tensor(image).permute(2, 0, 1)  # copies: arrays read from PIL are read-only
    masks = (torch.tensor(m) for m in (truth, pred, ignored))
    blended = draw_outcomes(chw, *masks).permute(1, 2, 0).numpy()
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    gt = np.repeat((truth * 255).astype(np.uint8)[..., None], 3, axis=2)
    gt[ignored] = IGNORED_RGB
    return np.concatenate([image, gap, gt, gap, blended], axis=1)


def captioned_panel(
    image: np.ndarray,
    truth: np.ndarray,
    pred: np.ndarray,
    caption: str,
    min_side: int = 256,
    ignored: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`overlay_panel` at the image's own resolution (scaled up so its short side is at
    least ``min_side`` px: image bicubic, masks nearest) under a white caption bar whose text
    is ~1/16 of the panel height (at least 14 px): (H, W, 3) uint8 and two (H, W) bool →
    (H' + bar, 3W' + 8, 3) uint8."""
    height, width = truth.shape
    scale = max(1.0, min_side / min(height, width))
    if scale > 1.0:
        size = (round(width * scale), round(height * scale))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))
        ignored = np.zeros_like(truth) if ignored is None else ignored
        truth, pred, ignored = (
            np.asarray(Image.fromarray(m).resize(size, Image.Resampling.NEAREST))
            for m in (truth, pred, ignored)
        )
    panel = overlay_panel(image, truth, pred, ignored)
    font_px, width = max(14, panel.shape[0] // 16), panel.shape[1]
    font = ImageFont.load_default(size=font_px)
    lines = [caption]
    if font.getlength(caption) > width - font_px:
        lines = caption.replace(": ", ":\n", 1).splitlines()  # name and labels | the Dice
    longest = max(font.getlength(line) for line in lines)
    font_px = max(10, min(font_px, int(font_px * (width - font_px) / longest)))  # fit width
    font = ImageFont.load_default(size=font_px)
    bar = Image.new("RGB", (width, font_px * (3 * len(lines) + 1) // 2 + font_px // 4), "white")
    text = "\n".join(lines)
    ImageDraw.Draw(bar).multiline_text((font_px // 2, font_px // 4), text, fill="black", font=font)
    return np.concatenate([np.asarray(bar), panel], axis=0)


def save_png(path: Path, array: np.ndarray) -> None:
    """(H, W[, 3]) uint8 ``array`` as a PNG file, written whole (:func:`atomic_write`)."""
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))
