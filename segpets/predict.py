"""Masks for new images: ``python -m segpets.predict ckpt_path=PATH input=IMAGE|DIR|GLOB
[output_dir=DIR] [threshold=0.5] [tta=hflip] [overlay=true] [probabilities=true]``.

``ckpt_path`` is a training checkpoint or an export from ``segpets.export`` (``.onnx``,
``.pt2``, TorchScript ``.pt``);
the preprocessing (image size, normalisation) is read from it. Every input is read as image
viewers display it (its EXIF Orientation applied) and its mask is written at that width and
height. Exit codes: 0 all written; 2 a user error (nothing written); 3 some inputs were
unreadable and skipped (named on stderr), the rest written.

Outputs are written whole, each stamped with what produced it (:mod:`segpets.inference.outputs`):
a rerun with the same model, inputs, threshold and TTA keeps the complete outputs and writes
only what is missing (a killed predict is finished by running it again); outputs of anything
else are replaced only with ``overwrite=true``. The output folder is claimed for the run
(:mod:`segpets.command.claim`): a second predict into it while one runs is refused, and so is
a folder holding another command's run.
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
from tqdm import tqdm

from segpets.checkpoints.trust import vouched_targets
from segpets.command.checks import check_resolvable, check_values
from segpets.command.entry import entry_point
from segpets.command.record import accept_run, task_run
from segpets.data.files import load_rgb
from segpets.errors import ConfigError, DataError
from segpets.evaluation.logits import check_tta, resize_logits
from segpets.evaluation.overlays import draw_mask
from segpets.inference.model import Model, load_model
from segpets.inference.outputs import (
    check_links,
    file_sha256,
    pending,
    remove_partial_writes,
    save_output,
    stamp,
)

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


def predict(cfg: DictConfig) -> list[str]:
    """Writes the outputs still missing; returns the inputs that could not be read (already
    reported)."""
    check_resolvable(cfg)
    check_values(cfg, "predict")
    vouched = vouched_targets(cfg)
    check_tta(cfg.tta, "tta")
    if not 0.0 < float(cfg.threshold) < 1.0:
        raise ConfigError(f"threshold must be strictly between 0 and 1, got {cfg.threshold}")
    if int(cfg.batch_size) < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {cfg.batch_size}")
    output_dir = Path(cfg.output_dir)
    files = find_inputs(str(cfg.input), output_dir)
    kinds = ["mask"] + [k for k in ("overlay", "probabilities") if cfg.get(k)]
    plan = output_paths(files, output_dir, kinds)
    check_links(plan, output_dir, f"{cfg.get('task_name') or 'predict'}.log")
    model_file = Path(str(cfg.ckpt_path)).expanduser().resolve()
    if not model_file.is_file():
        raise ConfigError(f"ckpt_path: no such file '{model_file}'")
    settings = {"model": file_sha256(model_file), "threshold": float(cfg.threshold)}
    settings["tta"] = cfg.tta
    todo, complete = pending(plan, settings, bool(cfg.overwrite))
    model = load_model(model_file, device=cfg.device, vouched=vouched)
    accept_run()  # every check that can refuse has passed: the log is written from now on
    remove_partial_writes(todo)
    cut = math.log(cfg.threshold / (1 - cfg.threshold))  # prob > t ⇔ logit > cut
    skipped: list[str] = []
    inputs = list(todo)
    bar = tqdm(total=len(inputs), unit="img", disable=not cfg.progress_bar, file=sys.stderr)
    for start in range(0, len(inputs), int(cfg.batch_size)):
        batch = inputs[start : start + int(cfg.batch_size)]
        images = {}
        for f in batch:
            try:
                images[f] = load_rgb(f, upright=True)  # as displayed (EXIF)
            except DataError as err:
                skipped.append(str(f))
                print(f"segpets: skipped unreadable input: {err}", file=sys.stderr, flush=True)
        if images:
            _predict_batch(model, images, todo, cfg.tta, cut, settings)
        bar.update(len(batch))
    bar.close()
    written = len(inputs) - len(skipped)
    kept = f" ({complete} more complete from an identical earlier run)" if complete else ""
    print(f"wrote {written} mask(s) to {os.path.abspath(output_dir)}{kept}; skipped {len(skipped)}")
    return skipped


def overlay(image: np.ndarray, mask: torch.Tensor) -> np.ndarray:
    """``image`` (H, W, 3) uint8 with the predicted pet ``mask`` (H, W) bool drawn in the pet
    colour of :mod:`segpets.evaluation.overlays` → (H, W, 3) uint8."""
    chw = torch.tensor(image).permute(2, 0, 1)  # a copy: arrays read from PIL are read-only
    return draw_mask(chw, mask).permute(1, 2, 0).numpy()


def _predict_batch(model: Model, images: dict[Path, np.ndarray], todo, tta, cut, settings):
    """Predict ``images`` (input → (H, W, 3) uint8) and write the outputs ``todo`` lists."""
    batch = torch.stack([model.preprocess(img) for img in images.values()])  # (N, 3, h, w)
    logits = model.logits(batch, tta=tta)  # (N, 1, h, w)
    for i, (path, image) in enumerate(images.items()):
        full = resize_logits(logits[i : i + 1], image.shape[:2])[0, 0]  # (H, W)
        mask = full > cut
        targets, stamped = todo[path], stamp(path, settings)
        if "mask" in targets:
            save_output(targets["mask"], mask.numpy().astype(np.uint8) * 255, stamped)
        if "overlay" in targets:
            save_output(targets["overlay"], overlay(image, mask), stamped)
        if "probabilities" in targets:
            prob = (torch.sigmoid(full) * 255).round().byte().numpy()
            save_output(targets["probabilities"], prob, stamped)


@entry_point("predict")
@hydra.main(version_base="1.3", config_path="configs", config_name="predict")
def main(cfg: DictConfig) -> None:
    # the masks' folder gets predict.log, no .hydra/; a folder of earlier predict outputs is
    # taken (each output is then checked), another command's run folder never
    with task_run(cfg, record=False, reuse="outputs"):
        skipped = predict(cfg)
        if skipped:
            names = ", ".join(skipped)
            print(f"segpets: {len(skipped)} input(s) skipped: {names}", file=sys.stderr)
    if skipped:
        raise SystemExit(SKIPPED_EXIT_CODE)


if __name__ == "__main__":
    main()
