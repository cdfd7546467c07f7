"""Config checks that run before a task builds or writes anything; each problem is one
``ConfigError`` naming the config key.

* :func:`check_resolvable`: every value of the composed config resolves (no ``???`` left, no
  ``${oc.env:...}`` of an unset variable, no interpolation of a missing key);
* :func:`check_values`: sizes and lr no library rejects clearly, and ``data.image_size`` at
  least what the model can take (its class's ``min_input_size``);
* :func:`check_launch`: ``hydra.job.chdir=true`` is refused (paths are relative to the launch
  directory);
* :func:`check_finetuning`: a Lightning finetuning callback (``BackboneFinetuning``) needs a net
  with a pretrained encoder, and owns the encoder's lr (``module.encoder_lr`` unset);
* :func:`config_differences`: which keys of a checkpoint's stored config differ from this
  run's, ignoring those that say where or how a run executes (:data:`RESUME_IGNORED`).
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from segpets.errors import ConfigError, SegpetsError

# Keys a resumed (or test-only) run may change: where things are, how the run executes and
# for how long, what it logs. Everything else (model, data preprocessing and splits, loss,
# optimizer, scheduler, seed, precision, batch sizes, ...) must match the checkpoint's config.
RESUME_IGNORED = (
    "ckpt_path",
    "resume",
    "train",
    "test",
    "tags",
    "task_name",
    "paths",
    "callbacks",
    "logger",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.min_epochs",
    "trainer.min_steps",
    "trainer.accelerator",
    "trainer.default_root_dir",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.limit_test_batches",
    "trainer.plugins",  # how checkpoints are written
    "data.root",
    "data.images",  # data=folder: where the folders are on this machine
    "data.masks",
    "data.split_dir",  # where the split is written (each run its own folder)
    "data.download",
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "data.cache",
    "data.cache_dir",
    "model.encoder_weights",
    # the module's arguments mirror the sections compared above (model, loss, optimizer,
    # scheduler, data.mean/std) or say how the net runs (channels_last, compile, test_tta)
    "module",
)
_ABSENT = "<absent>"


def check_resolvable(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` naming a key whose value is missing (``???``) or whose
    interpolation cannot be resolved (Hydra leaves both to whoever reads the key first). Of
    several failing keys, the one whose own value causes it is named: ``paths.data_dir``
    holding ``${oc.env:UNSET}``, not ``data.root`` that interpolates it."""
    raw = flatten(OmegaConf.to_container(cfg, resolve=False))
    failures: dict[str, OmegaConfBaseException] = {}
    for key in raw:
        try:
            OmegaConf.select(cfg, key, throw_on_missing=True)
        except OmegaConfBaseException as err:
            failures[key] = err
    if not HydraConfig.initialized():  # called outside a Hydra run (tests, notebooks):
        _drop_hydra_only(failures, raw)  # ${hydra:...} cannot resolve there, and is fine
    if not failures:
        return
    key = _root_failure(failures, raw)
    err = failures[key]
    own = _segpets_cause(err)
    if own is not None:  # a resolver's own one-line error (segpets.resolvers), said as it is
        raise own from None
    if isinstance(err, MissingMandatoryValue):
        raise ConfigError(f"{key}: missing mandatory value; set {key}=...")
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    raise ConfigError(f"{key}: cannot resolve {raw[key]!r}: {detail}")


def _root_failure(failures: dict[str, OmegaConfBaseException], raw: dict[str, Any]) -> str:
    """Of the keys that fail to resolve, the one whose own value is the cause: ``???``, or a
    value holding what the error names (the unset variable, the missing key); else one that
    interpolates no other failing key. Keys that only follow it (an interpolation, or a
    resolver reading other keys) are not named."""
    for key, err in failures.items():
        named = re.findall(r"'([^']+)'", str(err).strip().split("\n")[0])
        if raw[key] == "???" or any(name in str(raw[key]) for name in named):
            return key
    return next(
        (k for k in failures if not any("{" + other in str(raw[k]) for other in failures)),
        next(iter(failures)),
    )


def _segpets_cause(err: BaseException | None) -> SegpetsError | None:
    """The ``SegpetsError`` a resolver raised, which OmegaConf wraps (as the context of the
    context of its ``InterpolationResolutionError``), or ``None``."""
    while err is not None and not isinstance(err, SegpetsError):
        err = err.__cause__ or err.__context__
    return err


def _drop_hydra_only(failures: dict[str, Any], raw: dict[str, Any]) -> None:
    """Forget failures caused only by ``${hydra:...}`` (directly or through other keys)."""
    dropped = {k for k in failures if "${hydra:" in str(raw[k])}
    while True:
        more = {
            k for k in failures if k not in dropped and any("{" + d in str(raw[k]) for d in dropped)
        }
        if not more:
            break
        dropped |= more
    for key in dropped:
        del failures[key]


def check_values(cfg: DictConfig) -> None:
    """Sizes and lr that no library rejects clearly (lr=0 trains nothing; size 0 fails deep
    inside albumentations), and an image size the model can take."""
    for key in ("optimizer.lr", "data.image_size", "data.batch_size"):
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not value > 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    check_image_size(cfg)


def check_image_size(cfg: DictConfig) -> None:
    """``data.image_size`` >= the ``min_input_size`` of the class ``model._target_`` names
    (e.g. 16 for the UNet: four 2x2 max-pools); models without one take any size."""
    size = OmegaConf.select(cfg, "data.image_size", default=None)
    target = OmegaConf.select(cfg, "model._target_", default=None)
    if not isinstance(size, int) or not isinstance(target, str):
        return
    try:
        smallest = getattr(get_class(target), "min_input_size", 1)
    except Exception:  # an unknown target: building 'model' reports it, naming the key
        return
    if size < smallest:
        raise ConfigError(
            f"data.image_size={size} is below the {smallest} px that model {target} takes "
            f"(model.min_input_size); set data.image_size >= {smallest}"
        )


def check_finetuning(module: Any, callbacks: list[Any]) -> None:
    """``ConfigError`` when a Lightning finetuning callback (``callbacks=[default,
    backbone_finetuning]``) meets a module it cannot work with: a net without a pretrained
    encoder (``module.backbone``), or ``module.encoder_lr`` set (the callback sets the
    encoder's lr when it unfreezes it)."""
    from lightning.pytorch.callbacks import BaseFinetuning

    names = [type(c).__name__ for c in callbacks if isinstance(c, BaseFinetuning)]
    if not names:
        return
    if not hasattr(module, "backbone"):
        raise ConfigError(
            f"callbacks: {names[0]} freezes the net's pretrained encoder, and "
            f"{type(module.net).__name__} has none (model=smp or res34_unet have one)"
        )
    if getattr(module, "encoder_lr", None) is not None:
        raise ConfigError(
            f"module.encoder_lr={module.encoder_lr}: {names[0]} sets the encoder's lr when it "
            f"unfreezes it; set callbacks.backbone_finetuning.backbone_initial_lr (or "
            f"backbone_initial_ratio_lr) instead, or module.encoder_lr=null"
        )


def check_launch() -> None:
    """``hydra.job.chdir=true`` would move relative paths (data.root, ckpt_path, paths.*, the
    resume lookup) into the run folder; segpets resolves them against the launch directory."""
    if HydraConfig.initialized() and HydraConfig.get().job.chdir:
        raise ConfigError(
            "hydra.job.chdir=true is not supported: segpets resolves relative paths (data.root, "
            "ckpt_path, paths.*) against the directory you run from; drop the override"
        )


def config_differences(
    stored: Any, current: Any, raw: dict[str, Any] | None = None, ignored=RESUME_IGNORED
) -> list[str]:
    """``"key: <stored> there, <current> here"`` for every leaf that differs (lists and dicts
    compared element by element), keys matching ``ignored`` (a pattern or a prefix) left out.
    ``raw``: this run's unresolved values by key; a key that only follows another differing
    key (``${data.image_size}`` in a transform) is not listed on its own."""
    theirs, ours = flatten(stored), flatten(current)
    keys = sorted(k for k in theirs.keys() | ours.keys() if not _ignored(k, ignored))
    differ = [k for k in keys if theirs.get(k, _ABSENT) != ours.get(k, _ABSENT)]
    raw = raw or {}
    shown = [k for k in differ if not any("{" + o in str(raw.get(k, "")) for o in differ)]
    return [f"{k}: {theirs.get(k, _ABSENT)!r} there, {ours.get(k, _ABSENT)!r} here" for k in shown]


def flatten(node: Any, key: str = "") -> dict[str, Any]:
    """Dotted key → leaf value (``a.b[0].c``) of nested dicts and lists."""
    if isinstance(node, dict):
        items = [(f"{key}.{k}" if key else str(k), v) for k, v in node.items()]
    elif isinstance(node, (list, tuple)):
        items = [(f"{key}[{i}]", v) for i, v in enumerate(node)]
    else:
        return {key: node}
    flat: dict[str, Any] = {}
    for name, value in items:
        flat.update(flatten(value, name))
    return flat


def _ignored(key: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(key, p) or key.startswith((f"{p}.", f"{p}[")) for p in patterns)
