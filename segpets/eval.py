"""Evaluate a checkpoint with ``lightning test``:
``python -m segpets.eval ckpt_path=PATH [data.root=DIR] [split=test|val]``.

The net, preprocessing and precision are rebuilt from the config stored in the checkpoint,
so the Dice printed here is the one ``segpets.train`` reported for that checkpoint.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from segpets.build import build_module, instantiate_or_explain, load_checkpoint
from segpets.errors import ConfigError, user_errors

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test (or validate, for ``split=val``) the checkpoint; writes ``metrics.json``."""
    ckpt_path = Path(cfg.ckpt_path).expanduser().resolve()
    saved, state_dict = load_checkpoint(ckpt_path)
    if cfg.split not in ("test", "val"):
        raise ConfigError(f"split must be 'test' or 'val', got '{cfg.split}'")
    overrides = {k: v for k, v in cfg.data.items() if v is not None}
    datamodule = instantiate_or_explain(OmegaConf.merge(saved.data, overrides), "data")
    module = build_module(saved, with_optimizer=False)
    module.load_state_dict(state_dict)
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        precision=saved.trainer.get("precision", "32-true"),
        logger=False,
        default_root_dir=output_dir,
    )
    run = trainer.test if cfg.split == "test" else trainer.validate
    metrics = {k: float(v) for k, v in run(module, datamodule=datamodule)[0].items()}
    report = {
        "ckpt_path": str(ckpt_path),
        "split": cfg.split,
        "data_root": str(datamodule.root),
        "metrics": metrics,
    }
    (output_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    dice = metrics.get(f"{cfg.split}/dice", float("nan"))
    print(f"{cfg.split}/dice (per-image mean Dice) = {dice:.4f}  [all metrics: {output_dir}]")
    return metrics


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    with user_errors():
        evaluate(cfg)


if __name__ == "__main__":
    main()
