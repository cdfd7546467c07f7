"""Where predict writes, and what a rerun may keep: each output PNG says what produced it.

Every output (``<name>_mask.png``, ``_overlay.png``, ``_prob.png``) is written whole
(:func:`segpets.command.outputs.atomic_write`: a kill leaves the old file or none, never a
torn one) and carries a PNG text chunk ``segpets`` with the SHA-256 of its input and of the
model file, the threshold and the TTA. So on a rerun into the same ``output_dir``:

* an output with the stamp this run would write is complete and kept; an input whose outputs
  are all kept is not predicted again, so a killed predict is finished by running it again;
* any other existing output (another model, input, threshold or TTA, or a file segpets did not
  write) is replaced only with ``overwrite=true``; without it the run is refused first;
* nothing is written through a symbolic link: an output, or a folder on the way to it under
  ``output_dir``, that is a link refuses the run (one line naming it).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from segpets.command.outputs import TEMP_PREFIX, atomic_write
from segpets.errors import ConfigError

STAMP_KEY = "segpets"  # the PNG text chunk holding what produced an output
Plan = dict[Path, dict[str, Path]]  # input -> {kind: output path}


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stamp(input_file: Path, settings: dict[str, Any]) -> str:
    """What an output of ``input_file`` records: its input's and model's SHA-256, threshold,
    TTA (``settings`` holds all but the input), as compact JSON."""
    return json.dumps({"input": file_sha256(input_file), **settings}, sort_keys=True)


def read_stamp(path: Path) -> str | None:
    """The ``segpets`` text chunk of an existing PNG (header chunks only, no pixels decoded),
    or ``None`` (no chunk, not a PNG, unreadable)."""
    try:
        with Image.open(path) as img:
            value = img.info.get(STAMP_KEY)
    except Exception:  # a torn or foreign file: PIL raises many types (see data.files.decode)
        return None
    return value if isinstance(value, str) else None


def check_links(plan: Plan, output_dir: Path, log_name: str) -> None:
    """``ConfigError`` naming the first symbolic link a write would go through: an output,
    a folder between ``output_dir`` and it, or the run log. ``output_dir`` itself may be a
    link (the user named it)."""
    out = Path(os.path.abspath(output_dir))
    paths = {out / log_name} | {p for paths in plan.values() for p in paths.values()}
    for path in sorted(paths):
        for step in [path, *path.parents]:
            if step == out or out not in step.parents:
                break
            if step.is_symlink():
                raise ConfigError(
                    f"output_dir: '{step}' is a symbolic link (to '{os.readlink(step)}'); "
                    f"segpets never writes through links in its output folder: remove it, or "
                    f"choose another output_dir"
                )


def pending(plan: Plan, settings: dict[str, Any], overwrite: bool) -> tuple[Plan, int]:
    """(input → the outputs still to write, number of inputs whose outputs are all complete
    already). Existing outputs stamped as this run would stamp them are kept; other existing
    outputs are ``ConfigError`` unless ``overwrite`` (then they are written again)."""
    todo: Plan = {}
    done, foreign = 0, []
    for image, outputs in plan.items():
        existing = {k: p for k, p in outputs.items() if os.path.lexists(p)}
        expected = stamp(image, settings) if existing else None
        kept = {k for k, p in existing.items() if read_stamp(p) == expected}
        foreign += [p for k, p in existing.items() if k not in kept]
        missing = {k: p for k, p in outputs.items() if k not in kept}
        if missing:
            todo[image] = missing
        else:
            done += 1
    if foreign and not overwrite:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise ConfigError(
            f"output_dir: '{foreign[0]}'{more} already exist, written by another model, input, "
            f"threshold or tta (or not by segpets.predict); set overwrite=true to replace them, "
            f"or choose another output_dir"
        )
    return todo, done


def remove_partial_writes(plan: Plan) -> None:
    """Remove what killed writes of these outputs left (``.tmp-<output name>-*`` files beside
    them; never links or folders)."""
    for outputs in plan.values():
        for path in outputs.values():
            if not path.parent.is_dir():
                continue
            for tmp in path.parent.glob(glob.escape(f"{TEMP_PREFIX}{path.name}-") + "*"):
                if tmp.is_file() and not tmp.is_symlink():
                    tmp.unlink(missing_ok=True)


def save_output(path: Path, array: np.ndarray, stamped: str) -> None:
    """(H, W[, 3]) uint8 ``array`` as a PNG at ``path`` carrying ``stamped``, written whole."""
    info = PngInfo()
    info.add_text(STAMP_KEY, stamped)
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG", pnginfo=info))
