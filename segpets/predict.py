"""Masks for new images: ``python -m segpets.predict ckpt_path=PATH input=IMAGE|DIR|GLOB
[output_dir=DIR] [threshold=0.5] [tta=hflip] [overlay=true] [probabilities=true]``.

``ckpt_path`` is a training checkpoint or an export from ``segpets.export`` (``.onnx``,
``.pt2``, TorchScript ``.pt``);
the preprocessing (image size, normalisation) is read from it. Every input is read as image
viewers display it (its EXIF Orientation applied) and its mask is written at that width and
height. Exit codes: 0 all written; 2 a user error (nothing written); 3 some inputs were
unreadable and skipped (named on stderr), the rest written.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import sys
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from segpets.command.checks import check_resolvable
from segpets.command.entry import entry_point
from segpets.command.record import accept_run, task_run
from segpets.data.files import load_rgb
from segpets.errors import ConfigError, DataError
from segpets.evaluation.logits import check_tta, resize_logits
from segpets.inference.model import Model, load_model

log = logging.getLogger(__name__)

SKIPPED_EXIT_CODE = 3
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
OUTPUTS = {"mask": "_mask.png", "overlay": "_overlay.png", "probabilities": "_prob.png"}


def find_inputs(spec: str, output_dir: Path) -> list[Path]:
    """Files named by ``input``: one file, a folder's images (not recursive) or a glob;
    anything already under ``output_dir`` is left out (earlier outputs are not inputs)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    elif path.is_file():
        files = [path]
    elif glob.has_magic(spec):
        files = [Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True)]
        files = [p for p in files if p.is_file()]
    else:
        raise ConfigError(f"input: no such file or folder '{spec}'")
    out = Path(os.path.abspath(output_dir))
    files = sorted({Path(os.path.abspath(p)) for p in files if not _is_under(p, out)})
    if not files:
        raise ConfigError(f"input: no images found at '{spec}'")
    return files


def _is_under(path: Path, folder: Path) -> bool:
    return Path(os.path.abspath(path)).is_relative_to(folder)


def output_paths(files: list[Path], output_dir: Path, kinds: list[str]) -> dict[Path, dict]:
    """input → {kind: output path}: each input's path relative to the inputs' common folder,
    under ``output_dir`` (so nothing is written outside it), suffixed per kind."""
    base = Path(os.path.commonpath([str(f.parent) for f in files]))
    out = Path(os.path.abspath(output_dir))
    plan = {
        f: {k: out / f"{f.relative_to(base).with_suffix('')}{OUTPUTS[k]}" for k in kinds}
        for f in files
    }
    targets = [p for paths in plan.values() for p in paths.values()]
    clashes = sorted({str(p) for p in targets if targets.count(p) > 1})
    if clashes:
        raise ConfigError(
            f"input: several inputs would write '{clashes[0]}' (same name, "
            f"different extension); rename them or predict them separately"
        )
    return plan


def check_overwrite(plan: dict[Path, dict], overwrite: bool) -> None:
    existing = [p for paths in plan.values() for p in paths.values() if p.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise ConfigError(
            f"output_dir: '{existing[0]}'{more} already exist; set overwrite=true "
            f"to replace them, or choose another output_dir"
        )


def predict(cfg: DictConfig) -> list[str]:
    """Writes the outputs; returns the inputs that could not be read (already reported)."""
    check_resolvable(cfg)
    check_tta(cfg.tta, "tta")
    if not 0.0 < float(cfg.threshold) < 1.0:
        raise ConfigError(f"threshold must be strictly between 0 and 1, got {cfg.threshold}")
    if int(cfg.batch_size) < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {cfg.batch_size}")
    output_dir = Path(cfg.output_dir)
    files = find_inputs(str(cfg.input), output_dir)
    kinds = ["mask"] + [k for k in ("overlay", "probabilities") if cfg.get(k)]
    plan = output_paths(files, output_dir, kinds)
    check_overwrite(plan, bool(cfg.overwrite))
    model = load_model(cfg.ckpt_path, device=cfg.device)
    accept_run()  # every check that can refuse has passed: the log is written from now on
    cut = math.log(cfg.threshold / (1 - cfg.threshold))  # prob > t ⇔ logit > cut
    skipped: list[str] = []
    bar = tqdm(total=len(files), unit="img", disable=not cfg.progress_bar, file=sys.stderr)
    for start in range(0, len(files), int(cfg.batch_size)):
        batch = files[start : start + int(cfg.batch_size)]
        images = {}
        for f in batch:
            try:
                images[f] = load_rgb(f, upright=True)  # as displayed (EXIF)
            except DataError as err:
                skipped.append(str(f))
                print(f"segpets: skipped unreadable input: {err}", file=sys.stderr, flush=True)
        if images:
            _predict_batch(model, images, plan, cfg.tta, cut)
        bar.update(len(batch))
    bar.close()
    written = len(files) - len(skipped)
    print(f"wrote {written} mask(s) to {os.path.abspath(output_dir)}; skipped {len(skipped)}")
    return skipped


def _predict_batch(model: Model, images: dict[Path, np.ndarray], plan, tta, cut) -> None:
    batch = torch.stack([model.preprocess(img) for img in images.values()])  # (N, 3, h, w)
    logits = model.logits(batch, tta=tta)  # (N, 1, h, w)
    for i, (path, image) in enumerate(images.items()):
        full = resize_logits(logits[i : i + 1], image.shape[:2])[0, 0]  # (H, W)
        mask = (full > cut).numpy()
        targets = plan[path]
        targets["mask"].parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.astype(np.uint8) * 255).save(targets["mask"])
        if "overlay" in targets:
            tinted = image.copy()
            tinted[mask] = (0.5 * image[mask] + [0, 0, 127]).astype(np.uint8)
            Image.fromarray(tinted).save(targets["overlay"])
        if "probabilities" in targets:
            prob = (torch.sigmoid(full) * 255).round().byte().numpy()
            Image.fromarray(prob).save(targets["probabilities"])


@entry_point("predict")
@hydra.main(version_base="1.3", config_path="configs", config_name="predict")
def main(cfg: DictConfig) -> None:
    with task_run(cfg, record=False):  # the masks' folder gets predict.log, no .hydra/
        skipped = predict(cfg)
        if skipped:
            names = ", ".join(skipped)
            print(f"segpets: {len(skipped)} input(s) skipped: {names}", file=sys.stderr)
    if skipped:
        raise SystemExit(SKIPPED_EXIT_CODE)


if __name__ == "__main__":
    main()
