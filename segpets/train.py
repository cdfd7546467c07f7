"""Train (then test) a model: ``python -m segpets.train [experiment=...] [model=...] [k=v ...]``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from segpets.callbacks.best_metric import BestMetric
from segpets.callbacks.resume import exit_code_on_preemption
from segpets.checkpoints.resume import CheckpointPaths, refuse_overwrite, resolve_ckpt_path
from segpets.command.build import build_callbacks, build_module, instantiate_or_explain
from segpets.command.checks import (
    check_finetuning,
    check_launch,
    check_resolvable,
    check_values,
)
from segpets.command.console import quiet_libraries
from segpets.command.distributed import check_eval_shards, without_cpu_sync_batchnorm
from segpets.command.entry import entry_point
from segpets.command.extras import extras, run_summary
from segpets.command.loggers import build_loggers, close_loggers, describe_run, record_results
from segpets.command.outputs import atomic_write_text
from segpets.command.paths import make_paths_absolute
from segpets.command.record import accept_run, task_run
from segpets.errors import ConfigError
from segpets.evaluation.coverage import TestedImages

log = logging.getLogger(__name__)

# Shown in TensorBoard's HPARAMS tab (with the config groups chosen and any overridden key).
HPARAM_KEYS = (
    "optimizer.lr",
    "optimizer.weight_decay",
    "model.width",
    "model.arch",
    "model.encoder_name",
    "model.encoder_weights",
    "data.image_size",
    "data.batch_size",
    "trainer.max_epochs",
    "seed",
)
HPARAM_GROUPS = ("experiment", "model", "optimizer", "scheduler", "data", "trainer")


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint (``train=false``: test ``ckpt_path``); returns all
    logged metrics plus ``best/<checkpoint monitor>`` and ``best/<optimized_metric>``."""
    quiet_libraries()  # also when called from Python, outside the command line
    check_launch()
    check_resolvable(cfg)
    check_values(cfg, "train")
    make_paths_absolute(cfg)  # the checkpoints' config works from any folder
    if not (cfg.get("train") or cfg.get("test")):
        raise ConfigError("train=false test=false: nothing to do")
    extras(cfg)  # warnings, tags, the config tree (configs/extras)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate_or_explain(cfg.data, "data")
    module = build_module(cfg)
    best = BestMetric(cfg.optimized_metric) if cfg.get("optimized_metric") else None
    loggers = build_loggers(cfg.get("logger"))
    # always: the paths a resumed checkpoint names are checked; the test says what it covered
    always = [*([best] if best else []), CheckpointPaths(), TestedImages()]
    callbacks = [*build_callbacks(cfg.get("callbacks")), *always]
    if not loggers:  # logger=none: nothing to log learning rates to (Lightning would refuse)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = instantiate_or_explain(
        without_cpu_sync_batchnorm(cfg.trainer),
        "trainer",
        callbacks=callbacks,
        logger=loggers or False,
    )
    ckpt_path = _check_before_fit(cfg, module, datamodule, trainer)
    # every check that can refuse has passed: the run's record is written now; the folder of
    # an earlier run is taken only to continue from its own checkpoints
    accept_run(continues=_continues_in_place(ckpt_path))
    _announce(cfg, datamodule, trainer)
    failed = True
    try:
        metrics = _fit_and_test(cfg, trainer, module, datamodule, ckpt_path, best)
        failed = False
        return metrics
    finally:
        close_loggers(failed)  # W&B: this run ends here (a sweep's next job starts its own)


def _fit_and_test(cfg, trainer: L.Trainer, module, datamodule, ckpt_path, best) -> dict:
    metrics: dict[str, float] = {}
    if cfg.get("train"):
        with exit_code_on_preemption(trainer):  # SIGTERM/SIGINT: last.ckpt saved, exit 143/130
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        metrics.update(_floats(trainer.callback_metrics))
        checkpoint = trainer.checkpoint_callback
        if checkpoint and checkpoint.best_model_score is not None:
            metrics[f"best/{checkpoint.monitor}"] = float(checkpoint.best_model_score)
        if best and best.best is not None:
            metrics[f"best/{best.monitor}"] = best.best
    tested = None
    if cfg.get("test"):
        tested = _best_checkpoint(trainer) if cfg.get("train") else str(ckpt_path)
        with exit_code_on_preemption(trainer):
            metrics.update(_test(trainer, module, datamodule, tested))
    _log_hparams(cfg, trainer, metrics)
    best_values = {k: v for k, v in metrics.items() if k.startswith("best/")}
    record_results(trainer.loggers, tested or None, best_values)
    return metrics


def _announce(cfg: DictConfig, datamodule, trainer: L.Trainer) -> None:
    """Say where the run writes, on what data, device and precision; give the loggers the
    run's tags and folder."""
    output_dir = Path(trainer.default_root_dir).resolve()
    sizes = {}
    if hasattr(datamodule, "datasets"):  # the splits _check_before_fit scanned
        sizes = {split: len(ds) for split, ds in datamodule.datasets.items()}
    device = f"{trainer.strategy.root_device} x{trainer.num_devices * trainer.num_nodes}"
    if trainer.is_global_zero:
        print(run_summary(output_dir, sizes, device, str(trainer.precision)), flush=True)
    describe_run(trainer.loggers, cfg.get("tags") or [], output_dir)


def _check_before_fit(cfg: DictConfig, module, datamodule, trainer: L.Trainer) -> Path | None:
    """Fail in seconds, not after hours: the optimizer settings, every split used (scanned
    now, not after training), the checkpoint to resume from (or, with ``train=false``, to
    test), and existing checkpoints in the way. Returns that checkpoint."""
    training = bool(cfg.get("train"))
    if training:
        check_finetuning(module, trainer.callbacks)
        try:
            module.configure_optimizers()  # a dry run: torch checks every optimizer argument
        except (ValueError, TypeError) as err:
            raise ConfigError(f"optimizer/scheduler: {err}") from None
    download = getattr(datamodule, "download", False)
    if download and rank_zero_only.rank == 0:
        datamodule.prepare_data()  # now: a failed download is a refusal, not a broken run
    if hasattr(datamodule, "dataset") and (not download or rank_zero_only.rank == 0):
        splits = (["train", "val"] if training else []) + (["test"] if cfg.get("test") else [])
        for split in splits:  # every file of every split checked before the first step
            datamodule.dataset(split)
        check_eval_shards(datamodule, [s for s in splits if s != "train"], trainer.world_size)
    ckpt_path = resolve_ckpt_path(cfg, module.hparams.config)
    if not training:
        if ckpt_path is None:
            raise ConfigError(
                "train=false: set ckpt_path=<checkpoint> (or resume=true: this task_name's "
                "newest last.ckpt) to test; segpets.eval reports more"
            )
        return ckpt_path
    refuse_overwrite(getattr(trainer.checkpoint_callback, "dirpath", None), ckpt_path)
    return ckpt_path


def _continues_in_place(ckpt_path: Path | None) -> bool:
    """Whether this run resumes from a checkpoint in its own folder (continuing that run)."""
    if ckpt_path is None or not HydraConfig.initialized():
        return False
    folder = OmegaConf.select(HydraConfig.get(), "runtime.output_dir", default=None)
    return folder is not None and Path(folder).resolve() in Path(ckpt_path).resolve().parents


def _best_checkpoint(trainer: L.Trainer) -> str:
    """The best checkpoint of this run (after a resume: the copy in this run's folder)."""
    return trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""


def _test(
    trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule, ckpt: str
) -> dict[str, float]:
    """Test ``ckpt`` (the weights in memory if empty); prints the test Dice and the checkpoint
    and writes ``test_metrics.json``."""
    if not ckpt:
        log.warning("no best checkpoint was saved; testing the weights in memory")
    results = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt or None, weights_only=True)
    results = _floats(results[0])
    if trainer.is_global_zero:
        out = Path(trainer.default_root_dir) / "test_metrics.json"
        tta = module.test_tta
        count = next(cb for cb in trainer.callbacks if isinstance(cb, TestedImages))
        record = {
            "ckpt_path": ckpt or None,
            "tta": tta,
            "images": count.tested,  # scored: fewer than images_total with limit_test_batches
            "images_total": count.total,
            "metrics": results,
        }
        atomic_write_text(out, json.dumps(record, indent=2))
        subset = (
            f" on {count.tested} of {count.total} test images" if count.tested < count.total else ""
        )
        print(
            f"test/dice (per-image mean Dice{', hflip TTA' if tta else ''}) = "
            f"{results.get('test/dice', float('nan')):.4f}{subset}"
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
    params: dict[str, object] = {"tags": ", ".join(map(str, cfg.get("tags") or []))}
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
        lg.finalize("success")  # the trainer closed its writer; this one is new: flush and close it


def _floats(metrics) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


@entry_point("train")
@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns ``best/<optimized_metric>`` (the best value over the run, in
    that metric's direction) so sweepers can optimise it."""
    with task_run(cfg, reuse="resume"):  # its folder: a new one, or its own to resume
        metrics = train(cfg)
    return optimized_value(cfg, metrics) if HydraConfig.initialized() else None


def optimized_value(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """What a sweeper optimises: the best value of ``optimized_metric`` over the run, in its
    own direction (``segpets.callbacks.best.BestMetric``), never the last epoch's."""
    key = cfg.get("optimized_metric")
    return metrics.get(f"best/{key}") if key else None


if __name__ == "__main__":
    main()
