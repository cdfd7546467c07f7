"""Write an Oxford-layout dataset as a folder of images + a folder of binary masks, the layout
``data=folder`` reads (and most annotation tools export): a ready example for "Your own data".

    python scripts/oxford_to_folder.py ../shared/data/oxford-pet-mini /tmp/my-pets [--count 60]

writes ``/tmp/my-pets/images/<name>.jpg`` (copies), ``/tmp/my-pets/masks/<name>.png`` (0 or 255;
the trimap border as 255 too) and ``/tmp/my-pets/groups.csv`` (``stem,group``: cat or dog).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from segpets.data.files import read_split
from segpets.data.oxford_pet import image_path, load_mask, trimap_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="an Oxford-IIIT Pet layout folder")
    parser.add_argument("out", type=Path, help="new folder for images/, masks/, groups.csv")
    parser.add_argument("--count", type=int, default=60, help="samples, half cats half dogs")
    args = parser.parse_args()
    split_file = args.root / "annotations" / "trainval.txt"
    if not split_file.is_file() or args.count < 2:
        parser.exit(2, f"segpets: error: need '{split_file}' and --count >= 2\n")
    names = read_split(split_file)
    cats, dogs = [n for n in names if n[0].isupper()], [n for n in names if n[0].islower()]
    chosen = cats[: args.count // 2] + dogs[: args.count - args.count // 2]
    if args.out.exists():  # never mix into (or overwrite) a folder the user already has
        parser.exit(2, f"segpets: error: '{args.out}' already exists; give a new folder\n")
    (args.out / "images").mkdir(parents=True)
    (args.out / "masks").mkdir()
    groups = ["stem,group"]
    for name in chosen:
        shutil.copy(image_path(args.root, name), args.out / "images" / f"{name}.jpg")
        mask = load_mask(trimap_path(args.root, name)) * np.uint8(255)
        Image.fromarray(mask).save(args.out / "masks" / f"{name}.png")
        groups.append(f"{name},{'cat' if name[0].isupper() else 'dog'}")
    (args.out / "groups.csv").write_text("\n".join(groups) + "\n")
    print(f"wrote {len(chosen)} image/mask pairs and groups.csv to {args.out}")


if __name__ == "__main__":
    main()
