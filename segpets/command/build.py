"""Objects from config nodes: every ``_target_`` built through :func:`instantiate_or_explain`,
whose failures name the config key."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segpets.errors import ConfigError, SegpetsError
from segpets.module import SegmentationModule

log = logging.getLogger(__name__)


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
        target = cfg.get("_target_") if OmegaConf.is_dict(cfg) else None
        raise ConfigError(f"cannot build '{key}' ({target}): {detail}") from err


def build_module(cfg: DictConfig, with_optimizer: bool = True) -> SegmentationModule:
    """The LightningModule of the ``module`` node (net, loss, optimizer and scheduler partials,
    normalisation, fast paths, test-time augmentation), built by one ``instantiate``; the
    resolved run config rides along into every checkpoint. ``with_optimizer=False``: no
    optimizer or scheduler (a module that only evaluates or is timed)."""
    skip = {} if with_optimizer else {"optimizer": None, "scheduler": None}
    # partial first: `config` holds _target_s of its own, which instantiate must never see
    factory = instantiate_or_explain(
        cfg.module, "module", _partial_=True, _convert_="partial", **skip
    )
    try:
        return factory(config=OmegaConf.to_container(cfg, resolve=True))
    except ValueError as err:  # a value no net or library took (module.test_tta, data.mean)
        raise ConfigError(f"module: {err}") from None


def build_callbacks(cfg: DictConfig | None) -> list[L.Callback]:
    return [instantiate_or_explain(c, f"callbacks.{k}") for k, c in (cfg or {}).items() if c]
