"""A small procedurally generated "pets" dataset in the official Oxford-IIIT Pet layout.

It lets ``experiment=quickstart`` and the tests train end to end with no download, through
exactly the same loader as the real data: cats (pointed ears) and dogs (floppy ears) made of
ellipses with fur-like noise, on cluttered backgrounds, with trimaps (1 pet, 2 bg, 3 border).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from annotated_types import Ge, Le
from PIL import Image, ImageDraw, ImageFilter

from segpets.data.oxford_pet import PetDataModule

COMPLETE_MARKER = ".complete"

MAX_GENERATED = 100_000  # images of one generated split (a stored config cannot ask for more)


def _pet_silhouette(rng: np.random.Generator, w: int, h: int, is_cat: bool) -> Image.Image:
    """Binary 'L' image (255 = pet): body, head, ears, tail."""
    sil = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(sil)
    cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.45, 0.65) * h
    bw, bh = rng.uniform(0.18, 0.3) * w, rng.uniform(0.12, 0.2) * h
    draw.ellipse([cx - bw, cy - bh, cx + bw, cy + bh], fill=255)  # body
    side = rng.choice([-1, 1])
    hx, hy, r = cx + side * bw * 0.9, cy - bh * 1.1, rng.uniform(0.09, 0.14) * min(w, h)
    draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=255)  # head
    for ear in (-1, 1):
        ex = hx + ear * r * 0.6
        if is_cat:  # pointed ears
            draw.polygon(
                [(ex - r * 0.4, hy - r * 0.5), (ex + r * 0.4, hy - r * 0.5), (ex, hy - r * 1.6)],
                fill=255,
            )
        else:  # floppy ears hanging at the sides
            draw.ellipse(
                [
                    ex + ear * r * 0.3 - r * 0.3,
                    hy - r * 0.4,
                    ex + ear * r * 0.3 + r * 0.3,
                    hy + r * 0.7,
                ],
                fill=255,
            )
    tx = cx - side * bw
    draw.line(
        [(tx, cy), (tx - side * bw * 0.5, cy - bh * rng.uniform(0.5, 1.5))],
        fill=255,
        width=max(2, int(r * 0.3)),
    )  # tail
    for leg in np.linspace(-0.6, 0.6, 4):
        lx = cx + leg * bw
        draw.rectangle([lx - r * 0.15, cy, lx + r * 0.15, cy + bh * 1.8], fill=255)
    return sil


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Smooth colour gradient plus random rectangles and noise, (H, W, 3) float."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, w)[None, :, None]
    bg = np.broadcast_to(c0 * (1 - t) + c1 * t, (h, w, 3)).copy()
    for _ in range(rng.integers(2, 6)):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        bg[y0 : y0 + rng.integers(5, h // 2), x0 : x0 + rng.integers(5, w // 2)] = rng.uniform(
            0, 255, 3
        )
    return bg + rng.normal(0, 12, bg.shape)


def make_sample(rng: np.random.Generator, is_cat: bool) -> tuple[Image.Image, Image.Image]:
    """One (RGB image, trimap) pair of a random size between 80 and 128 pixels a side."""
    w, h = (int(v) for v in rng.integers(80, 129, size=2))
    sil = _pet_silhouette(rng, w, h, is_cat)
    pet = np.asarray(sil) > 127
    fur = rng.uniform(40, 220, 3) + rng.normal(0, 25, (h, w, 3))
    stripes = 20 * np.sin(np.arange(w)[None, :, None] / rng.uniform(2, 5))
    image = np.where(pet[..., None], fur + (stripes if is_cat else 0), _background(rng, w, h))
    outer = np.asarray(sil.filter(ImageFilter.MaxFilter(3))) > 127
    inner = np.asarray(sil.filter(ImageFilter.MinFilter(3))) > 127
    trimap = np.full((h, w), 2, np.uint8)
    trimap[outer] = 3
    trimap[inner] = 1
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)), Image.fromarray(trimap)


def generate(root: str | Path, num_trainval: int = 120, num_test: int = 60, seed: int = 0) -> Path:
    """Write the dataset to ``root`` once; later calls find the completed copy and return.

    Written to a temporary sibling and renamed, so an interrupted run never leaves a partial
    dataset that looks complete.
    """
    root = Path(root).expanduser().resolve()
    if (root / COMPLETE_MARKER).exists():
        return root
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "annotations" / "trimaps").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    splits: dict[str, list[str]] = {"trainval": [], "test": []}
    for split, count in (("trainval", num_trainval), ("test", num_test)):
        for i in range(count):
            is_cat = i % 2 == 0
            # Oxford convention: capitalised names are cats, lower-case are dogs
            name = f"Synthcat_{split}{i}" if is_cat else f"synthdog_{split}{i}"
            image, trimap = make_sample(rng, is_cat)
            image.save(tmp / "images" / f"{name}.jpg", quality=92)
            trimap.save(tmp / "annotations" / "trimaps" / f"{name}.png")
            species = 1 if is_cat else 2
            splits[split].append(f"{name} {species} {species} 1")
    for split, lines in splits.items():
        (tmp / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    header = "#Image CLASS-ID SPECIES BREED ID\n#SPECIES: 1:Cat 2:Dog\n"
    (tmp / "annotations" / "list.txt").write_text(
        header + "\n".join(splits["trainval"] + splits["test"]) + "\n"
    )
    (tmp / COMPLETE_MARKER).touch()
    try:
        tmp.rename(root)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (root / COMPLETE_MARKER).exists():
            raise
    return root


class SyntheticPetDataModule(PetDataModule):
    """:class:`PetDataModule` over a generated dataset (see :func:`generate`), written once to
    ``root`` (a cache folder, never a dataset folder)."""

    def __init__(
        self,
        num_trainval: Annotated[int, Ge(2), Le(MAX_GENERATED)] = 120,
        num_test: Annotated[int, Ge(1), Le(MAX_GENERATED)] = 60,
        seed: int = 0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.num_trainval, self.num_test, self.generator_seed = num_trainval, num_test, seed

    def check_layout(self) -> None:
        generate(self.root, self.num_trainval, self.num_test, self.generator_seed)
        super().check_layout()
