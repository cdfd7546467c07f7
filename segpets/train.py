"""Train (then test) a model: ``python -m segpets.train [experiment=...] [model=...] [k=v ...]``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from segpets.build import build_callbacks, build_loggers, build_module, instantiate_or_explain
from segpets.errors import user_errors

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint; returns all logged metrics plus ``best/<monitor>``."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate_or_explain(cfg.data, "data")
    module = build_module(cfg)
    trainer: L.Trainer = instantiate_or_explain(
        cfg.trainer,
        "trainer",
        callbacks=build_callbacks(cfg.get("callbacks")),
        logger=build_loggers(cfg.get("logger")) or False,
    )
    metrics: dict[str, float] = {}
    if cfg.get("train"):
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics.update(_floats(trainer.callback_metrics))
        if trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_score is not None:
            best = trainer.checkpoint_callback.best_model_score
            metrics[f"best/{trainer.checkpoint_callback.monitor}"] = float(best)
    if cfg.get("test"):
        metrics.update(_test(trainer, module, datamodule))
    return metrics


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


def _floats(metrics) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


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
