"""Train (then test) a model: ``python -m segpets.train [experiment=...] [model=...] [k=v ...]``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from segpets.build import build_callbacks, build_loggers, build_module, instantiate_or_explain
from segpets.callbacks.resume import exit_code_on_preemption
from segpets.checkpoint_io import refuse_overwrite, resolve_ckpt_path
from segpets.distributed import check_eval_shards, without_cpu_sync_batchnorm
from segpets.errors import ConfigError, user_errors, with_group_check

log = logging.getLogger(__name__)

# Shown in TensorBoard's HPARAMS tab (with the config groups chosen and any overridden key).
HPARAM_KEYS = (
    "optimizer.lr",
    "optimizer.weight_decay",
    "model.width",
    "model.encoder_weights",
    "data.image_size",
    "data.batch_size",
    "trainer.max_epochs",
    "seed",
)
HPARAM_GROUPS = ("experiment", "model", "optimizer", "scheduler", "data", "trainer")


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint; returns all logged metrics plus ``best/<monitor>``."""
    _check_positive(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate_or_explain(cfg.data, "data")
    module = build_module(cfg)
    trainer: L.Trainer = instantiate_or_explain(
        without_cpu_sync_batchnorm(cfg.trainer),
        "trainer",
        callbacks=build_callbacks(cfg.get("callbacks")),
        logger=build_loggers(cfg.get("logger")) or False,
    )
    metrics: dict[str, float] = {}
    if cfg.get("train"):
        ckpt_path = _check_before_fit(cfg, module, datamodule, trainer)
        with exit_code_on_preemption(trainer):  # SIGTERM/SIGINT: last.ckpt saved, exit 143/130
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        metrics.update(_floats(trainer.callback_metrics))
        if trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_score is not None:
            best = trainer.checkpoint_callback.best_model_score
            metrics[f"best/{trainer.checkpoint_callback.monitor}"] = float(best)
    if cfg.get("test"):
        with exit_code_on_preemption(trainer):
            metrics.update(_test(trainer, module, datamodule))
    _log_hparams(cfg, trainer, metrics)
    return metrics


def _check_positive(cfg: DictConfig) -> None:
    """Sizes and lr that no library rejects clearly (lr=0 trains nothing; size 0 fails deep
    inside albumentations' validation)."""
    for key in ("optimizer.lr", "data.image_size", "data.batch_size"):
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, (int, float)) and not value > 0:
            raise ConfigError(f"{key} must be > 0, got {value}")


def _check_before_fit(cfg: DictConfig, module, datamodule, trainer: L.Trainer) -> Path | None:
    """Fail in seconds, not after hours: the optimizer settings, the test split (scanned now,
    not after training), the checkpoint to resume from, and existing checkpoints in the way."""
    try:
        module.configure_optimizers()  # a dry run: torch checks every optimizer argument
    except (ValueError, TypeError) as err:
        raise ConfigError(f"optimizer/scheduler: {err}") from None
    if hasattr(datamodule, "dataset") and not datamodule.download:
        splits = ["train", "val"] + (["test"] if cfg.get("test") else [])
        for split in splits:  # every file of every split checked before the first step
            datamodule.dataset(split)
        check_eval_shards(datamodule, splits[1:], trainer.world_size)
    ckpt_path = resolve_ckpt_path(cfg)
    refuse_overwrite(getattr(trainer.checkpoint_callback, "dirpath", None), ckpt_path)
    return ckpt_path


def _test(trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule):
    ckpt = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if not ckpt:
        log.warning("no best checkpoint was saved; testing the weights in memory")
    results = _floats(trainer.test(module, datamodule=datamodule, ckpt_path=ckpt or None)[0])
    if trainer.is_global_zero:
        out = Path(trainer.default_root_dir) / "test_metrics.json"
        out.write_text(json.dumps({"ckpt_path": ckpt or None, "metrics": results}, indent=2))
        print(
            f"test/dice (per-image mean Dice) = {results.get('test/dice', float('nan')):.4f}"
            f"  [checkpoint: {ckpt or 'in-memory weights'}; all metrics: {out}]"
        )
    return results


def _log_hparams(cfg: DictConfig, trainer: L.Trainer, metrics: dict[str, float]) -> None:
    """TensorBoard's HPARAMS tab: the run's main settings next to its final metrics
    (``hp/best/val/dice``, ``hp/test/dice``, ...), so the runs of a sweep compare side by side."""
    final = {f"hp/{k}": v for k, v in metrics.items() if k.startswith(("best/", "test/"))}
    loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
    if not final or not loggers:
        return
    keys = list(HPARAM_KEYS)
    params: dict[str, object] = {}
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        choices = hydra_cfg.runtime.choices
        params.update({g: choices[g] for g in HPARAM_GROUPS if choices.get(g)})
        keys += [o.split("=", 1)[0].lstrip("+~") for o in hydra_cfg.overrides.task]
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not OmegaConf.is_config(value):
            params[key] = value
    for lg in loggers:
        lg.log_hyperparams(params, final)


def _floats(metrics) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


@with_group_check
@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns ``best/<optimized_metric>`` (the best value over the run)
    so sweepers can optimise it."""
    with user_errors():
        metrics = train(cfg)
    key = cfg.get("optimized_metric")
    if key and HydraConfig.initialized():
        return metrics.get(f"best/{key}", metrics.get(key))
    return None


if __name__ == "__main__":
    main()
