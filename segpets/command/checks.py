"""Config checks that run before a task builds or writes anything; each problem is one
``ConfigError`` naming the config key.

* :func:`check_resolvable`: every value of the composed config resolves (no ``???`` left, no
  ``${oc.env:...}`` of an unset variable, no interpolation of a missing key);
* :func:`check_values`: sizes and lr no library rejects clearly, ``data.image_size`` at
  least what the model can take (its class's ``min_input_size``), the loggers' packages and
  MLflow store (:mod:`segpets.command.loggers`), ``tags`` (``extras.enforce_tags``), every
  typed value against the constructor it reaches (:mod:`segpets.command.typed`), callback
  and logger nodes that build nothing, checkpoint/scheduler monitors the module never logs,
  and ``cuda`` asked for where there is none;
* :func:`check_launch`: ``hydra.job.chdir=true`` is refused (paths are relative to the launch
  directory);
* :func:`check_finetuning`: a Lightning finetuning callback (``BackboneFinetuning``) needs a net
  with a pretrained encoder, and owns the encoder's lr (``module.encoder_lr`` unset);
* :func:`config_differences`: which keys of a checkpoint's stored config differ from this
  run's, ignoring those that say where or how a run executes (:data:`RESUME_IGNORED`).
"""

from __future__ import annotations

import re
from difflib import get_close_matches
from fnmatch import fnmatchcase
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, get_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from segpets.command.extras import check_tags
from segpets.command.loggers import check_loggers
from segpets.command.typed import (
    COMMAND_KEYS,
    Problem,
    schema_problems,
    target_problems,
)
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
    "extras",  # what a run prints at start
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
# config groups whose entries each build one object: a hint of what an entry looks like
BUILDER_GROUPS = {
    "callbacks": "lightning.pytorch.callbacks.EarlyStopping",
    "logger": "lightning.pytorch.loggers.CSVLogger",
}
ALWAYS_LOGGED = ("epoch", "step", "lr-")  # Lightning's own, and LearningRateMonitor's lr-*
# keys whose null means what the given value meant in older configs (Lightning's default for
# limit_*_batches is all batches, which configs before issue 25 wrote as 1.0)
_NULL_MEANS = {f"trainer.limit_{s}_batches": 1.0 for s in ("train", "val", "test")}


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


def check_values(cfg: DictConfig, command: str | None = None) -> None:
    """Sizes and lr that no library rejects clearly (lr=0 trains nothing; size 0 fails deep
    inside albumentations), an image size the model can take, loggers that can work (their
    package installed, an MLflow store that can be written), the tags ``extras`` asks for, and
    every typed value (:func:`check_typed`); ``command``: the config's name (``train``,
    ``eval``, ...), which types the keys of its own (:data:`segpets.command.typed.COMMAND_KEYS`)."""
    for key in ("optimizer.lr", "data.image_size", "data.batch_size"):
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not value > 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    check_image_size(cfg)
    check_loggers(cfg)
    check_tags(cfg)
    check_typed(cfg, command)


def check_typed(cfg: DictConfig, command: str | None = None) -> None:
    """One ``ConfigError`` for the first value that cannot work, of: the command's own keys,
    callback and logger nodes without a ``_target_``, every ``_target_`` node's arguments
    (:mod:`segpets.command.typed`), monitors nothing logs, ``cuda`` without CUDA. A key whose
    value only follows another failing key (``${data.image_size}``) is not the one named."""
    plain = _plain(cfg)
    problems = [
        *schema_problems(plain, COMMAND_KEYS.get(command or "", {})),
        *builder_node_problems(plain),
        *target_problems(plain),
        *monitor_problems(plain),
        *device_problems(plain, command),
    ]
    if problems:
        raw = flatten(OmegaConf.to_container(cfg, resolve=False))
        raise ConfigError(root_problem(problems, raw).message)


def root_problem(problems: list[Problem], raw: dict[str, Any]) -> Problem:
    """The first problem whose value is its own: not reached through an interpolation (of its
    key, a key inside it, or a node above it: ``module.scheduler: ${scheduler}``) of a node
    holding another failing key."""
    keys = {p.key for p in problems}

    def related(a: str, b: str) -> bool:
        return a == b or a.startswith((b + ".", b + "[")) or b.startswith((a + ".", a + "["))

    def follows(problem: Problem) -> bool:
        own = [v for k, v in raw.items() if related(k, problem.key) and "${" in str(v)]
        targets = [t for v in own for t in re.findall(r"\$\{([\w.\[\]]+)\}", str(v))]
        return any(related(t, other) for t in targets for other in keys - {problem.key})

    return next((p for p in problems if not follows(p)), problems[0])


def builder_node_problems(plain: dict[str, Any]) -> list[Problem]:
    """Entries of ``callbacks``/``logger`` that are neither null nor a node with a
    ``_target_`` (``+callbacks.early_stopping.patience=3`` alone): Hydra would hand Lightning
    a plain dict."""
    problems = []
    for group, example in BUILDER_GROUPS.items():
        for name, node in (plain.get(group) or {}).items():
            if node is not None and not (isinstance(node, dict) and "_target_" in node):
                key = f"{group}.{name}"
                problems.append(
                    Problem(
                        key,
                        f"{key} has no _target_: each entry of {group} is a node naming the "
                        f"class to build (e.g. +{key}._target_={example} with its arguments) "
                        f"or null; got {node!r}",
                    )
                )
    return problems


def monitor_problems(plain: dict[str, Any]) -> list[Problem]:
    """Checkpoint/early-stopping/scheduler monitors and ``optimized_metric`` naming a metric
    the module never logs while fitting (its class's ``fit_metrics()``; Lightning would only
    notice after the first epoch)."""
    target = (plain.get("module") or {}).get("_target_") if plain.get("train") else None
    try:
        logged = set(get_object(target).fit_metrics()) if isinstance(target, str) else None
    except Exception:  # another module class, without fit_metrics
        logged = None
    if not logged:
        return []
    monitors = [
        (f"callbacks.{name}.monitor", node.get("monitor"))
        for name, node in (plain.get("callbacks") or {}).items()
        if isinstance(node, dict)
    ]
    scheduler = plain.get("scheduler")
    if isinstance(scheduler, dict) and scheduler.get("scheduler"):
        monitors.append(("scheduler.monitor", scheduler.get("monitor")))
    monitors.append(("optimized_metric", plain.get("optimized_metric")))
    problems = []
    for key, name in monitors:
        if isinstance(name, str) and name not in logged and not name.startswith(ALWAYS_LOGGED):
            close = get_close_matches(name, sorted(logged), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(
                Problem(
                    key,
                    f"{key}: '{name}' is not a metric logged while fitting{hint}; logged: "
                    f"{', '.join(sorted(logged))}, epoch, step, lr-<optimizer>",
                )
            )
    return problems


def device_problems(plain: dict[str, Any], command: str | None) -> list[Problem]:
    """``device=cuda`` (predict, bench) or ``trainer.accelerator=gpu|cuda`` (eval) where
    PyTorch sees no CUDA device."""
    if torch.cuda.is_available():
        return []
    key = {"predict": "device", "bench": "device", "eval": "trainer.accelerator"}.get(command or "")
    value = (
        plain.get("device") if key == "device" else (plain.get("trainer") or {}).get("accelerator")
    )
    if key and value in ("cuda", "gpu"):
        return [
            Problem(
                key,
                f"{key}={value}: PyTorch sees no CUDA device here (torch.cuda.is_available() is "
                f"False); use {key}=cpu",
            )
        ]
    return []


def _plain(cfg: DictConfig) -> dict[str, Any]:
    """``cfg`` as resolved plain data; values that cannot resolve here (``${hydra:...}``
    outside a Hydra run) stay as their ``${...}`` text, which the type checks skip."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:
        plain = OmegaConf.to_container(cfg, resolve=False)
        for key in flatten(plain):
            value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
            if value is not None and not OmegaConf.is_config(value):
                _assign(plain, key, value)
        return plain


def _assign(plain: Any, key: str, value: Any) -> None:
    parts = re.findall(r"[^.\[\]]+", key)
    node = plain
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


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
    theirs, ours = _as_null(flatten(stored)), _as_null(flatten(current))
    keys = sorted(k for k in theirs.keys() | ours.keys() if not _ignored(k, ignored))
    differ = [k for k in keys if theirs.get(k, _ABSENT) != ours.get(k, _ABSENT)]
    raw = raw or {}
    shown = [k for k in differ if not any("{" + o in str(raw.get(k, "")) for o in differ)]
    return [f"{k}: {theirs.get(k, _ABSENT)!r} there, {ours.get(k, _ABSENT)!r} here" for k in shown]


def _as_null(flat: dict[str, Any]) -> dict[str, Any]:
    """``flat`` with the values :data:`_NULL_MEANS` names as null (``1.0`` → ``None``)."""
    same = {k: None for k, v in _NULL_MEANS.items() if flat.get(k) == v and type(flat[k]) is float}
    return {**flat, **same}


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
