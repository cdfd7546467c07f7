"""Turn (Hydra) configs into objects. Shared by train, eval and the tests."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segpets.errors import ConfigError, SegpetsError
from segpets.module import SegmentationModule
from segpets.trust import REBUILT_SECTIONS, trusted_config

log = logging.getLogger(__name__)

# Keys of the `model` group that configure how the net runs, not what it is: build_module
# consumes them, the net's constructor never sees them.
FAST_PATH_KEYS = ("channels_last", "compile")


def instantiate_or_explain(cfg: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` whose failures name the config key; our own errors (data
    missing, bad value) pass through unchanged."""
    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, SegpetsError):
            raise cause from None
        detail = str(cause or err).strip().splitlines()[-1]
        raise ConfigError(f"cannot build '{key}' ({cfg.get('_target_')}): {detail}") from err


def build_module(
    cfg: DictConfig, with_optimizer: bool = True, pretrained: bool = True
) -> SegmentationModule:
    """Net + loss (+ optimizer/scheduler partials) from ``cfg``; the resolved ``cfg`` itself
    rides along into every checkpoint. ``pretrained=False`` builds the net without loading
    ``model.encoder_weights`` (the stored config keeps them): for nets whose weights all come
    from a checkpoint, which then needs neither the network nor the weights file."""
    model_cfg = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
    fast = {key: bool(model_cfg.pop(key, False)) for key in FAST_PATH_KEYS}
    if not pretrained and model_cfg.get("encoder_weights") is not None:
        model_cfg.encoder_weights = None
    net = instantiate_or_explain(model_cfg, "model")
    if fast["compile"]:
        net.compile()  # in place: state-dict keys (and so checkpoints) stay as without compile
    loss = instantiate_or_explain(cfg.loss, "loss")
    optimizer = instantiate_or_explain(cfg.optimizer, "optimizer") if with_optimizer else None
    scheduler = None
    if with_optimizer and cfg.get("scheduler"):
        scheduler = instantiate_or_explain(cfg.scheduler, "scheduler", _convert_="partial")
    config = OmegaConf.to_container(cfg, resolve=True)
    stats = {k: tuple(cfg.data[k]) for k in ("mean", "std") if cfg.get("data") and k in cfg.data}
    return SegmentationModule(
        net, loss, optimizer, scheduler, config=config, channels_last=fast["channels_last"], **stats
    )


def module_from_checkpoint(
    config: DictConfig, state_dict: dict[str, torch.Tensor]
) -> SegmentationModule:
    """The module a checkpoint's trusted ``config`` describes (no optimizer), with the
    checkpoint's ``state_dict`` loaded; pretrained encoder weights are not fetched again."""
    module = build_module(config, with_optimizer=False, pretrained=False)
    module.load_state_dict(state_dict)
    return module


def build_callbacks(cfg: DictConfig | None) -> list[L.Callback]:
    return [instantiate_or_explain(c, f"callbacks.{k}") for k, c in (cfg or {}).items() if c]


def build_loggers(cfg: DictConfig | None) -> list[Any]:
    return [instantiate_or_explain(c, f"logger.{k}") for k, c in (cfg or {}).items() if c]


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


def stored_config(ckpt: dict[str, Any]) -> Any:
    """The training config a segpets checkpoint carries (untrusted plain data)."""
    hparams = ckpt.get("hyper_parameters")
    return hparams.get("config") if isinstance(hparams, dict) else None


def load_checkpoint(
    path: str | Path, need: tuple[str, ...] = REBUILT_SECTIONS
) -> tuple[DictConfig, dict[str, torch.Tensor]]:
    """(trusted training config, model state dict) of a segpets checkpoint: loaded with
    ``weights_only=True``, and the sections segpets rebuilds checked against its allowlist of
    targets before anything is instantiated (``segpets.trust``)."""
    path, ckpt = read_checkpoint(path)
    config = stored_config(ckpt)
    if not isinstance(config, dict) or "model" not in config:
        raise ConfigError(f"ckpt_path: '{path}' is not a segpets training checkpoint")
    return trusted_config(config, f"ckpt_path: '{path}'", need), ckpt["state_dict"]
