"""Evaluate a checkpoint with ``lightning test``:
``python -m segpets.eval ckpt_path=PATH [data.root=DIR] [split=test|val] [eval.tta=hflip]
[eval.full_res=true]``.

The net, preprocessing and precision are rebuilt from the config stored in the checkpoint,
so the Dice printed here is the one ``segpets.train`` reported for that checkpoint. Beside
``metrics.json`` the run folder gets per-image/species/breed CSVs and overlays of the worst
images (also logged to TensorBoard).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from segpets.checkpoints.load import (
    load_checkpoint,
    module_from_checkpoint,
    restore_datamodule_state,
)
from segpets.checkpoints.paths import stored_data_paths
from segpets.checkpoints.trust import vouched_targets
from segpets.command.build import instantiate_or_explain
from segpets.command.checks import check_resolvable, check_values
from segpets.command.entry import entry_point
from segpets.command.outputs import atomic_write_text
from segpets.command.paths import make_paths_absolute
from segpets.command.record import accept_run, task_run
from segpets.command.tables import markdown, write_csv
from segpets.errors import ConfigError
from segpets.evaluation.collector import EvalCollector
from segpets.evaluation.logits import check_tta
from segpets.evaluation.report import group_rows, save_png

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig, output_dir: Path | None = None) -> dict[str, float]:
    """Test (or validate, for ``split=val``) the checkpoint; writes ``metrics.json``, the CSVs
    and the worst-image overlays into ``output_dir`` (default: the Hydra run folder)."""
    check_resolvable(cfg)
    check_values(cfg, "eval")
    make_paths_absolute(cfg)  # data.* values given here: relative to this folder
    vouched = vouched_targets(cfg)
    ckpt_path = Path(cfg.ckpt_path).expanduser().resolve()
    saved, state_dict = load_checkpoint(ckpt_path, vouched=vouched)
    if cfg.split not in ("test", "val"):
        raise ConfigError(f"split must be 'test' or 'val', got '{cfg.split}'")
    opts = cfg.get("eval") or {}
    tta = opts.get("tta")
    check_tta(tta, "eval.tta")
    if int(opts.get("boundary_tolerance", 2)) < 0 or int(opts.get("worst_k", 16)) < 0:
        raise ConfigError("eval.boundary_tolerance and eval.worst_k must be >= 0")
    output_dir = Path(output_dir or HydraConfig.get().runtime.output_dir)
    datamodule = instantiate_or_explain(_eval_data(cfg, saved), "data")
    restore_datamodule_state(datamodule, ckpt_path)  # e.g. the random split it trained with
    check_eval_data(datamodule, cfg.split)
    source = f"ckpt_path: '{ckpt_path}'"
    module = module_from_checkpoint(saved, state_dict, test_tta=tta, source=source)
    accept_run()  # every check that can refuse has passed: the run's record is written now
    output_dir.mkdir(parents=True, exist_ok=True)
    if hasattr(datamodule, "write_splits"):  # the split scored, in this run's folder
        datamodule.write_splits(output_dir / "splits")

    columns: dict[str, dict[str, float]] = {}
    plain = None
    if tta:  # the same checkpoint without TTA first, for the comparison column
        without = module_from_checkpoint(saved, state_dict)
        plain, _ = _run(cfg, saved, without, datamodule, output_dir, worst_k=0, logger=False)
        columns.update(_columns(plain, cfg.split, ""))
    logger = TensorBoardLogger(output_dir, name="tensorboard", version="", default_hp_metric=False)
    metrics, collector = _run(cfg, saved, module, datamodule, output_dir, logger=logger)
    columns.update(_columns(metrics, cfg.split, f" +{tta}" if tta else ""))
    empty = collector.empty_truth_summary()

    report = {
        "ckpt_path": str(ckpt_path),
        "split": cfg.split,
        "data_root": str(datamodule.root),
        "image_size": saved.data.get("image_size"),
        "tta": tta,
        "full_res": bool(opts.get("full_res")),
        "boundary_tolerance_px": int(opts.get("boundary_tolerance", 2)),
        "images": len(collector.records),
        "images_empty_truth": empty["images_empty_truth"],
        "metrics": metrics,
        f"{cfg.split}/dice_without_empty_truth": empty["dice_without_empty_truth"],
    }
    if plain is not None:
        report["metrics_without_tta"] = plain
    atomic_write_text(output_dir / "metrics.json", json.dumps(report, indent=2))  # first
    _write_breakdown(collector, datamodule, output_dir, logger)
    print(metrics_table(columns))
    dice = metrics.get(f"{cfg.split}/dice", float("nan"))
    print(f"{cfg.split}/dice (per-image mean Dice) = {dice:.4f}  [all metrics: {output_dir}]")
    if empty["images_empty_truth"]:
        print(
            f"{empty['images_empty_truth']} of {len(collector.records)} {cfg.split} images have "
            f"no pet pixel in their ground truth (Dice 1 if predicted empty, else 0); per-image "
            f"Dice without them = {empty['dice_without_empty_truth']:.4f}"
        )
    return metrics


def check_eval_data(datamodule, split: str) -> None:
    """Everything the pass and its report read, checked before the pass: the split's files
    (the pre-scan, and with ``data.cache=true`` the cache entry built), the bad-sample policy,
    and the per-group labels (``data.groups``), each failure one ``SegpetsError``."""
    datamodule.dataset(split)
    datamodule.sample_labels(datamodule.split_names(split))


def _eval_data(cfg: DictConfig, saved: DictConfig) -> DictConfig:
    """The checkpoint's data config with the non-null ``data.*`` values of this command (e.g.
    where the data is on this machine); a value the checkpoint's data module does not take is
    one line naming it. Paths of the training machine are not used: the split is written into
    this run's folder once the run is accepted (never back into the training run's), and a
    cache goes to this machine's ``paths.cache_dir`` unless ``data.cache_dir`` is set."""
    overrides = {k: v for k, v in cfg.data.items() if v is not None}
    foreign = sorted(set(overrides) - set(saved.data))
    if foreign:
        takes = [k for k in saved.data if not k.startswith("_") and not k.endswith("_transform")]
        raise ConfigError(
            f"data.{foreign[0]} does not apply to this checkpoint's data "
            f"({saved.data.get('_target_')}, which takes data.{', data.'.join(takes)})"
        )
    if "split_dir" in saved.data:
        overrides["split_dir"] = None  # written by evaluate() once every check has passed
    cache_root = f"{cfg.paths.cache_dir}/arrays"
    stored = stored_data_paths(OmegaConf.to_container(saved.data), overrides, cache_root)
    return OmegaConf.merge(stored, overrides)


def _run(cfg, saved, module, datamodule, output_dir, logger, worst_k=None):
    """One ``trainer.test``/``validate`` pass with an :class:`EvalCollector` attached."""
    opts = cfg.get("eval") or {}
    collector = EvalCollector(
        cfg.split,
        datamodule.source,
        boundary_tolerance=int(opts.get("boundary_tolerance", 2)),
        full_res=bool(opts.get("full_res")),
        worst_k=int(opts.get("worst_k", 16)) if worst_k is None else worst_k,
    )
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        precision=saved.trainer.get("precision", "32-true"),
        logger=logger,
        callbacks=[collector],
        enable_progress_bar=bool(cfg.get("progress_bar", True)),
        default_root_dir=output_dir,
    )
    run = trainer.test if cfg.split == "test" else trainer.validate
    results = run(module, datamodule=datamodule, verbose=False)[0]
    return {k: float(v) for k, v in results.items()}, collector


def _columns(metrics: dict[str, float], split: str, suffix: str) -> dict[str, dict[str, float]]:
    """Table columns: eval-resolution metrics and (if any) full-resolution ones."""
    full = f"{split}/full_res/"
    evalres = {k.split("/", 1)[1]: v for k, v in metrics.items() if not k.startswith(full)}
    columns = {f"eval-res{suffix}": evalres}
    fullres = {k[len(full) :]: v for k, v in metrics.items() if k.startswith(full)}
    if fullres:
        columns[f"full-res{suffix}"] = fullres
    return columns


def metrics_table(columns: dict[str, dict[str, float]]) -> str:
    """Metrics as rows, one column per evaluated variant (e.g. eval-res, full-res, +hflip), as
    a Markdown table; a metric a variant lacks is an empty cell."""
    names = dict.fromkeys(k for col in columns.values() for k in col)
    rows = [{"metric": n, **{c: col.get(n) for c, col in columns.items()}} for n in names]
    return markdown(rows, ["metric", *columns])


def _write_breakdown(collector: EvalCollector, datamodule, out: Path, logger) -> None:
    """per_image.csv, one per_<label>.csv for each label the data gives its samples (Oxford:
    species and breed; data=folder: group), worst first, and worst/*.png."""
    labels = datamodule.sample_labels([r["name"] for r in collector.records])
    records = [
        {"name": r["name"], **labels[r["name"]]}
        | {k: round(v, 6) for k, v in r.items() if k != "name"}
        for r in collector.records
    ]
    write_csv(out / "per_image.csv", sorted(records, key=lambda r: (r["dice"], r["name"])))
    for column in dict.fromkeys(c for r in labels.values() for c in r):
        write_csv(out / f"per_{column}.csv", group_rows(records, column))
    panels = collector.worst_panels(labels)
    for rank, (name, dice, panel) in enumerate(panels, 1):
        save_png(out / "worst" / f"{rank:02d}_{name}_dice{dice:.3f}.png", panel)
        logger.experiment.add_image(f"worst/{rank:02d}_{name}", panel, dataformats="HWC")
    logger.experiment.flush()


@entry_point("eval")
@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    with task_run(cfg):
        evaluate(cfg)


if __name__ == "__main__":
    main()
