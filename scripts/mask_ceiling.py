"""Per-image Dice of a perfect net against the eval targets, per mask resampling.

A perfect net at S px predicts what the S px image shows: the full-resolution mask shrunk the
way the image is (area averaging), thresholded at 0.5. Scored against the eval pipeline's
target mask, a centre-aligned resize (cv2.INTER_NEAREST_EXACT) leaves only the quantisation
of the boundary; cv2's plain nearest (the albumentations default) also shifts the target
~0.5 px right and down, capping the Dice any net can reach.

    python scripts/mask_ceiling.py ../shared/data/oxford-pet-mini [--sizes 64 128 256]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from segpets.data.files import read_split
from segpets.data.oxford_pet import load_mask, trimap_path

FLAGS = {"nearest (old)": cv2.INTER_NEAREST, "nearest_exact": cv2.INTER_NEAREST_EXACT}


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else 2.0 * (pred & truth).sum() / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    args = parser.parse_args()
    masks = [
        load_mask(trimap_path(args.root, n))
        for n in read_split(args.root / "annotations" / "test.txt")
    ]
    print(f"{len(masks)} test masks of {args.root}")
    print("| size | " + " | ".join(FLAGS) + " |\n|---|" + "---|" * len(FLAGS))
    for size in args.sizes:
        cells = []
        for flag in FLAGS.values():
            scores = []
            for mask in masks:
                seen = cv2.resize(
                    mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA
                )
                target = cv2.resize(mask, (size, size), interpolation=flag)
                scores.append(dice(seen > 0.5, target.astype(bool)))
            cells.append(f"{np.mean(scores):.4f}")
        print(f"| {size} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
