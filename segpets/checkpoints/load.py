"""Reading a segpets checkpoint back: the file (``weights_only``, so a crafted pickle cannot run
code), its stored config (checked by :mod:`segpets.checkpoints.trust` before anything is
built), and the module and data state it describes. Checkpoints of every earlier segpets
release load: :func:`upgrade_config` brings their stored config to today's layout."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segpets.checkpoints.trust import REBUILT_SECTIONS, trusted_config
from segpets.command.build import instantiate_or_explain
from segpets.errors import ConfigError
from segpets.module import SegmentationModule

# Keys of the `model` section that 0.1.0 checkpoints held and that are now arguments of the
# module (`module.channels_last`, `module.compile`); the net's constructor never took them.
MOVED_MODEL_KEYS = ("channels_last", "compile")


def read_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(absolute path, checkpoint dict) of a file loaded with ``weights_only=True``, so a
    crafted pickle cannot run code; one-line ``ConfigError`` when missing or unreadable."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"ckpt_path: no such file '{path}'")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt/truncated file, or a pickle that needs arbitrary code
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ConfigError(f"ckpt_path: cannot load checkpoint '{path}': {first}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ConfigError(f"ckpt_path: '{path}' is not a segpets training checkpoint")
    return path, ckpt


def stored_config(ckpt: dict[str, Any]) -> Any:
    """The training config a segpets checkpoint carries (untrusted plain data), in today's
    layout (:func:`upgrade_config`)."""
    hparams = ckpt.get("hyper_parameters")
    config = hparams.get("config") if isinstance(hparams, dict) else None
    return upgrade_config(config) if isinstance(config, dict) else config


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config of any release in today's layout (plain data in, plain data out;
    nothing is checked or built here): 0.1.0 kept ``channels_last``/``compile`` in ``model``
    and ``test_tta`` at the top; they are ``module`` arguments now."""
    model = config.get("model")
    if "module" in config or not isinstance(model, dict):
        return config
    module = {k: model[k] for k in MOVED_MODEL_KEYS if k in model}
    module["test_tta"] = config.get("test_tta")
    model = {k: v for k, v in model.items() if k not in MOVED_MODEL_KEYS}
    rest = {k: v for k, v in config.items() if k != "test_tta"}
    return {**rest, "model": model, "module": module}


def load_checkpoint(
    path: str | Path,
    need: tuple[str, ...] = REBUILT_SECTIONS,
    vouched: Collection[str] = frozenset(),
) -> tuple[DictConfig, dict[str, torch.Tensor]]:
    """(trusted training config, model state dict) of a segpets checkpoint: loaded with
    ``weights_only=True``, and the sections segpets rebuilds checked against its allowlist of
    targets (plus ``vouched``: what the user vouches for, :func:`~segpets.checkpoints.trust.
    vouched_targets`) before anything is instantiated (:mod:`segpets.checkpoints.trust`)."""
    path, ckpt = read_checkpoint(path)
    config = stored_config(ckpt)
    if not isinstance(config, dict) or "model" not in config:
        raise ConfigError(f"ckpt_path: '{path}' is not a segpets training checkpoint")
    return trusted_config(config, f"ckpt_path: '{path}'", need, vouched), ckpt["state_dict"]


def module_from_checkpoint(
    config: DictConfig,
    state_dict: dict[str, torch.Tensor],
    test_tta: str | None = None,
    source: str = "ckpt_path",
) -> SegmentationModule:
    """The module a checkpoint's trusted ``config`` describes, for evaluation (no optimizer),
    with the checkpoint's ``state_dict`` loaded. The net is built without its pretrained
    encoder weights (every weight comes from the checkpoint: no download, no weights file),
    and only after :func:`check_weight_shapes`; inputs are normalised with the stored
    ``data.mean``/``std``. ``test_tta``: see :class:`SegmentationModule`; ``source`` names the
    file in errors."""
    model = OmegaConf.to_container(config.model, resolve=True)
    if model.get("encoder_weights") is not None:
        model["encoder_weights"] = None
    check_weight_shapes(model, state_dict, source)
    net = instantiate_or_explain(OmegaConf.create(model), "model")
    loss = instantiate_or_explain(config.loss, "loss")
    flags = config.get("module") or {}
    module = SegmentationModule(
        net,
        loss,
        input_mean=config.data.get("mean"),
        input_std=config.data.get("std"),
        channels_last=bool(flags.get("channels_last", False)),
        test_tta=test_tta,
        config=OmegaConf.to_container(config, resolve=True),
    )
    module.load_state_dict(state_dict)
    return module


def check_weight_shapes(model: dict[str, Any], state_dict: dict[str, Any], source: str) -> None:
    """The net ``model`` (a stored, trusted config section) describes, built on PyTorch's
    ``meta`` device (shapes only, no memory), has exactly the checkpoint's weight names and
    shapes; else one ``ConfigError``. So a stored config cannot make segpets allocate more
    than the weights its file holds (a UNet of width 4000 asks for tens of GB). A net that
    cannot be built on the meta device is left to building it for real."""
    try:
        with torch.device("meta"):
            net = instantiate(OmegaConf.create(model))
        built = {f"net.{k}": tuple(v.shape) for k, v in net.state_dict().items()}
    except Exception:
        return
    stored = {
        k: tuple(getattr(v, "shape", ())) for k, v in state_dict.items() if k.startswith("net.")
    }
    if built == stored:
        return
    differ = [k for k in built if k in stored and built[k] != stored[k]]  # the net's order
    if differ:
        detail = (
            f"{differ[0]}: {list(stored[differ[0]])} in the file, {list(built[differ[0]])} built"
        )
    else:
        missing, extra = sorted(built.keys() - stored.keys()), sorted(stored.keys() - built.keys())
        detail = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
    raise ConfigError(
        f"{source}: its stored model config does not describe its weights ({detail}); "
        f"refusing the file, nothing was built from it"
    )


def restore_datamodule_state(datamodule: L.LightningDataModule, path: str | Path) -> None:
    """Give ``datamodule`` the state its training run saved in the checkpoint at ``path``
    (Lightning stores ``datamodule.state_dict()`` under the class name), e.g. the random split
    of ``data=folder``; data modules that keep no state are left alone."""
    if type(datamodule).state_dict is L.LightningDataModule.state_dict:
        return
    _, ckpt = read_checkpoint(path)
    state = ckpt.get(type(datamodule).__qualname__)
    if state:
        datamodule.load_state_dict(state)
