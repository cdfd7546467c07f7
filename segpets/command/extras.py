"""What a run does before its task, and what it says when it starts (``configs/extras``, as
lightning-hydra-template's ``extras``):

* ``extras.ignore_warnings``: Python warnings silenced;
* ``extras.enforce_tags``: ``tags`` must not be empty (asked for at a terminal, else refused);
* ``extras.print_config``: the composed config printed as a tree (rich), and saved as
  ``<run dir>/config_tree.log`` once the run is accepted;
* :func:`run_summary`: one line with the run folder, the split sizes, device and precision.
"""

from __future__ import annotations

import io
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from segpets.command.outputs import atomic_write_text
from segpets.errors import ConfigError

CONFIG_TREE = "config_tree.log"
# the order of the tree's branches (the rest follow in config order)
PRINT_ORDER = (
    "data",
    "model",
    "loss",
    "optimizer",
    "scheduler",
    "module",
    "callbacks",
    "logger",
    "trainer",
    "paths",
    "extras",
)
UNRESOLVED = ("module",)  # its values interpolate whole sections shown above: shown as written


def extras(cfg: DictConfig) -> None:
    """Apply ``cfg.extras`` (absent: nothing) before the task."""
    options = cfg.get("extras") or {}
    if options.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    if options.get("enforce_tags"):
        enforce_tags(cfg)
    if options.get("print_config"):
        print_config_tree(cfg)


def tags_needed(cfg: DictConfig) -> bool:
    """``extras.enforce_tags`` is on and ``tags`` is empty."""
    return bool(OmegaConf.select(cfg, "extras.enforce_tags", default=False)) and not cfg.get("tags")


def check_tags(cfg: DictConfig) -> None:
    """Where no one can be asked (not a terminal, a sweep, a DDP worker), empty ``tags`` with
    ``extras.enforce_tags`` is a ``ConfigError``."""
    if tags_needed(cfg) and not _can_ask():
        raise ConfigError(
            "tags: empty, and extras.enforce_tags=true asks every run to be tagged; set "
            "tags=[name,...] (or extras.enforce_tags=false)"
        )


def _can_ask() -> bool:
    sweep = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    worker = os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"
    return sys.stdin.isatty() and sys.stdout.isatty() and not sweep and not worker


def enforce_tags(cfg: DictConfig) -> None:
    """Empty ``tags``: ask for them at a terminal (comma-separated; Enter: ``dev``), else
    raise ``ConfigError`` (:func:`check_tags`)."""
    if not tags_needed(cfg):
        return
    check_tags(cfg)
    from rich.prompt import Prompt

    answer = Prompt.ask("No tags given: tags for this run, comma-separated", default="dev")
    with open_dict(cfg):
        cfg.tags = [t.strip() for t in answer.split(",") if t.strip()] or ["dev"]


def config_tree(cfg: DictConfig, order: Sequence[str] = PRINT_ORDER):
    """The config as a ``rich.tree.Tree``: one branch per top-level key (``order`` first), its
    YAML (resolved, except the :data:`UNRESOLVED` sections) beneath."""
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order]
    for key in keys:
        branch = tree.add(str(key), style="dim", guide_style="dim")
        node = cfg[key]  # a section stays unresolved until to_yaml(resolve=...)
        if OmegaConf.is_config(node):
            text = OmegaConf.to_yaml(node, resolve=key not in UNRESOLVED)
        else:
            text = str(node)
        branch.add(Syntax(text.rstrip("\n"), "yaml", theme="ansi_dark", background_color="default"))
    return tree


@rank_zero_only
def print_config_tree(cfg: DictConfig) -> None:
    """Print :func:`config_tree` to the console (colours where it is a terminal)."""
    from rich.console import Console

    Console(file=sys.stdout).print(config_tree(cfg))


@rank_zero_only
def save_config_tree(cfg: DictConfig, folder: Path) -> Path | None:
    """``folder/config_tree.log``: the tree as plain text (no colours), if
    ``extras.print_config``."""
    if not OmegaConf.select(cfg, "extras.print_config", default=False):
        return None
    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, width=120, color_system=None, force_terminal=False).print(config_tree(cfg))
    return atomic_write_text(folder / CONFIG_TREE, buffer.getvalue())


def run_summary(output_dir: Path | None, sizes: dict[str, int], device: str, precision: str) -> str:
    """``run folder: ... | data: 180 train / 20 val / 198 test images | device: ... |
    precision: 32-true``."""
    parts = [f"run folder: {output_dir}"] if output_dir else []
    if sizes:
        parts.append(
            "data: " + " / ".join(f"{n} {split}" for split, n in sizes.items()) + " images"
        )
    parts += [f"device: {device}", f"precision: {precision}"]
    return " | ".join(parts)
