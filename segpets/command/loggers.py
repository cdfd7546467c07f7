"""The run's loggers (``logger=...``: csv, tensorboard, mlflow, wandb, many_loggers, lists).

Lightning's loggers are used as they are; around them, segpets

* checks before a run (:func:`check_loggers`) that the package an option needs is installed
  and that an MLflow SQLite store can be written, one line naming the key (exit 2);
* creates the folder of an MLflow SQLite store, and turns a store MLflow cannot open into the
  same kind of line, before the run is accepted (:func:`build_loggers`);
* gives every logger the run's ``tags`` and its folder (:func:`describe_run`), the tested
  checkpoint and the best values (:func:`record_results`), and ends a W&B run when the task
  ends (:func:`close_loggers`), so the next job of a sweep starts its own.

Lightning itself logs the module's hyperparameters at the start of ``fit``/``test``: the whole
resolved run config (``config/...`` keys; MLflow flattens them into params) and the metrics as
``self.log`` logs them.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from segpets.command.build import instantiate_or_explain
from segpets.errors import ConfigError

SQLITE = "sqlite:///"  # sqlite:///relative/path.db, sqlite:////absolute/path.db
SQLITE_HEADER = b"SQLite format 3\x00"
# logger class name -> the package it needs (both in the optional extra segpets[loggers])
PACKAGES = {"MLFlowLogger": "mlflow", "WandbLogger": "wandb"}
RUN_DIR_TAG = "segpets.run_dir"
TESTED_TAG = "segpets.tested_checkpoint"


def logger_nodes(cfg: DictConfig) -> dict[str, Any]:
    """``logger.<name>`` → its config node, for the loggers chosen (empty ones left out)."""
    node = cfg.get("logger")
    return {str(k): v for k, v in node.items() if v} if OmegaConf.is_dict(node) else {}


def check_loggers(cfg: DictConfig) -> None:
    """Before anything is built: every chosen logger's package is installed, and every
    ``tracking_uri: sqlite:///...`` names a file that is (or can be created as) a writable
    SQLite database. Raises ``ConfigError`` naming the key."""
    for name, node in logger_nodes(cfg).items():
        target = node.get("_target_") if OmegaConf.is_dict(node) else None
        package = PACKAGES.get(str(target).rsplit(".", 1)[-1]) if target else None
        if package and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"logger.{name}: needs the {package} package, which is not installed; "
                f"pip install 'segpets[loggers]' (or choose another logger)"
            )
        uri = OmegaConf.select(node, "tracking_uri", default=None)
        if isinstance(uri, str) and uri.startswith(SQLITE):
            check_sqlite_store(sqlite_path(uri), f"logger.{name}.tracking_uri")


def sqlite_path(uri: str) -> Path:
    """The database file of a ``sqlite:///`` URI (relative to the working directory unless
    the path after the three slashes is absolute), ``~`` expanded."""
    return Path(uri[len(SQLITE) :]).expanduser()


def check_sqlite_store(path: Path, key: str) -> None:
    """``path`` is an SQLite database file this process can write, or can be created: its
    nearest existing folder is a writable folder. Raises ``ConfigError`` naming ``key``."""
    problem = _store_problem(path)
    if problem:
        raise ConfigError(
            f"{key}: cannot use the MLflow store '{path}' ({problem}); set {key}="
            f"sqlite:////a/writable/folder/mlflow.db, or paths.log_dir to a writable folder"
        )


def _store_problem(path: Path) -> str | None:
    if path.exists():
        if not path.is_file():
            return "not a file"
        if not os.access(path, os.R_OK | os.W_OK):
            return "not writable"
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
        if head and head != SQLITE_HEADER:
            return "not an SQLite database"
        folder = path.parent
    else:
        folder = next((p for p in path.absolute().parents if p.exists()), Path("/"))
    if not folder.is_dir():
        return f"'{folder}' is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"folder '{folder}' is not writable"
    return None


def build_loggers(cfg: DictConfig | None) -> list[Logger]:
    """The loggers of the ``logger`` node. An MLflow SQLite store's folder is created first
    (SQLite creates only the file); a store MLflow cannot open is a ``ConfigError``."""
    loggers = []
    for name, node in (cfg or {}).items():
        if not node:
            continue
        uri = OmegaConf.select(node, "tracking_uri", default=None)
        if isinstance(uri, str) and uri.startswith(SQLITE):
            path = sqlite_path(uri)
            check_sqlite_store(path, f"logger.{name}.tracking_uri")
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            loggers.append(instantiate_or_explain(node, f"logger.{name}"))
        except ConfigError as err:
            if uri is None:
                raise
            raise ConfigError(f"logger.{name}.tracking_uri: cannot open '{uri}': {err}") from None
    return loggers


@rank_zero_only
def describe_run(loggers: Iterable[Logger], tags: Iterable[str], run_dir: Path | None) -> None:
    """Give every logger the run's ``tags``: MLflow and W&B as their own run tags, TensorBoard
    as a text summary; every logger also gets them as the hyperparameter ``tags`` (CSV's and
    TensorBoard's ``hparams.yaml``). MLflow also gets the run folder (tag ``segpets.run_dir``)."""
    tags = [str(t) for t in tags]
    for lg in loggers:
        if isinstance(lg, MLFlowLogger):
            for tag in tags:
                lg.experiment.set_tag(lg.run_id, tag, "")
            if run_dir is not None:
                lg.experiment.set_tag(lg.run_id, RUN_DIR_TAG, str(run_dir))
        elif isinstance(lg, WandbLogger):
            run = lg.experiment
            run.tags = tuple(dict.fromkeys([*(run.tags or ()), *tags]))
        elif isinstance(lg, TensorBoardLogger):
            lg.experiment.add_text("tags", ", ".join(tags) or "(none)")
        if not isinstance(lg, MLFlowLogger):  # MLflow: params are the config, tags are tags
            lg.log_hyperparams({"tags": tags})


@rank_zero_only
def record_results(loggers: Iterable[Logger], tested: str | None, best: dict[str, float]) -> None:
    """The checkpoint that was tested (MLflow tag ``segpets.tested_checkpoint``, W&B summary
    ``tested_checkpoint``) and the run's best values (``best/<metric>``: MLflow metrics, W&B
    summary; TensorBoard has them in its HPARAMS tab)."""
    for lg in loggers:
        if isinstance(lg, MLFlowLogger):
            if tested:
                lg.experiment.set_tag(lg.run_id, TESTED_TAG, tested)
            if best:
                lg.log_metrics(best)
        elif isinstance(lg, WandbLogger):
            summary = lg.experiment.summary
            summary.update({**best, **({"tested_checkpoint": tested} if tested else {})})


def close_loggers(failed: bool = False) -> None:
    """End the process's W&B run (as lightning-hydra-template does after each task): the next
    job of a sweep starts a run of its own instead of logging into this one."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)
