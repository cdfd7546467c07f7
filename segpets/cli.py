"""What every Hydra entry point checks on its command line before Hydra creates anything.

Hydra reports a bad override (an unknown key, bad syntax, an unknown config option) with a
multi-line message and exit code 1, and a value it cannot resolve (``???``, an unset
``${oc.env:...}``) only when something reads it. segpets composes the config as Hydra will and
runs its config checks on it (``segpets.config_checks``): each problem is one
``segpets: error:`` line naming the override or key, exit code 2, and no run folder is created.
A sweep's overrides are expanded into its jobs, and every job is checked before any starts.
"""

from __future__ import annotations

import copy
import functools
import itertools
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Quote, QuotedString
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from segpets.config_checks import check_launch, check_resolvable, check_values
from segpets.errors import CONFIG_DIR, USER_ERROR_EXIT_CODE, ConfigError, check_group_choices
from segpets.sweep import sweep_signals

MULTIRUN_FLAGS = ("-m", "--multirun")
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_./+@%:~-]+")  # never special in Hydra's override grammar
MAX_JOBS_CHECKED = 64  # a bigger grid is left to Hydra (composing takes ~0.1 s a job)


def entry_point(config_name: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Decorate a ``@hydra.main`` function: group options, then override syntax and keys (of
    every job of a sweep), are checked first."""

    def wrap(hydra_main: Callable[[], Any]) -> Callable[[], Any]:
        @functools.wraps(hydra_main)
        def main() -> Any:
            argv = sys.argv[1:]
            check_group_choices(argv)
            multirun = check_overrides(argv, config_name)
            with sweep_signals(multirun):  # Ctrl-C on a sweep: jobs save, none starts anew
                return hydra_main()

        return main

    return wrap


def check_overrides(argv: list[str], config_name: str, config_dir: Path = CONFIG_DIR) -> bool:
    """Compose ``config_name`` with the command line's overrides as Hydra will (each job of a
    sweep); exit 2 with one line on the first failure. Other Hydra flags (``--cfg``, ``-cn``,
    ``--help`` ...) and sweeps Hydra's basic sweeper cannot expand are left to Hydra. Returns
    whether this is a multirun (``-m``, or ``hydra.mode: MULTIRUN`` as Optuna's config sets)."""
    multirun = any(a in MULTIRUN_FLAGS for a in argv)
    if any(a.startswith("-") and a not in MULTIRUN_FLAGS for a in argv):
        return multirun
    overrides = [a for a in argv if a not in MULTIRUN_FLAGS]
    try:
        jobs = sweep_jobs(OverridesParser.create().parse_overrides(overrides))
    except HydraException as err:
        _fail(err)
    if jobs is None or len(jobs) > MAX_JOBS_CHECKED:
        return True
    with initialize_config_dir(str(config_dir), version_base="1.3"):
        for job in jobs:
            shown = job if len(jobs) > 1 else None
            try:
                cfg = compose(config_name, overrides=job, return_hydra_config=True)
            except (HydraException, OmegaConfBaseException) as err:
                _fail(err, shown)
            try:
                check_job(cfg)
            except ConfigError as err:
                _fail(err, shown)
            multirun = multirun or cfg.hydra.mode == RunMode.MULTIRUN
    return multirun


def check_job(cfg: DictConfig) -> None:
    """segpets' config checks (``segpets.config_checks``) on one composed job config (with its
    ``hydra`` node), as the task will see it: Hydra's run folder filled in, so values that
    interpolate ``${hydra:runtime.output_dir}`` resolve too. Raises ``ConfigError``."""
    hydra_config = HydraConfig.instance()
    previous = hydra_config.cfg
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(Path.cwd() / "<run folder>")
    task = copy.deepcopy(cfg)
    with open_dict(task):
        del task["hydra"]
    try:
        hydra_config.set_config(cfg)
        if cfg.hydra.job.chdir:
            check_launch()
        check_resolvable(task)
        check_values(task)
        for key in ("hydra.run.dir", "hydra.sweep.dir"):  # resolved by Hydra before the task
            OmegaConf.select(cfg, key, throw_on_missing=False)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{getattr(err, 'full_key', None)}: {str(err).splitlines()[0]}") from None
    finally:
        hydra_config.cfg = previous


def sweep_jobs(overrides: list[Override]) -> list[list[str]] | None:
    """Each job's overrides, as Hydra's basic sweeper expands a grid (``a=1,2 b=x,y``: four
    jobs); ``None`` for sweeps only other sweepers expand (``interval(...)``)."""
    choices = []
    for override in overrides:
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices.append([f"{key}={override.get_value_element_as_str()}"])
        elif override.is_discrete_sweep():
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            return None
    return [list(job) for job in itertools.product(*choices)]


def _fail(err: Exception, job: list[str] | None = None) -> NoReturn:
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    detail = " ".join(line for line in lines if not line.startswith(("full_key:", "object_type")))
    where = f" (sweep job {' '.join(job)})" if job else ""
    print(f"segpets: error: {detail or type(err).__name__}{where}", file=sys.stderr, flush=True)
    raise SystemExit(USER_ERROR_EXIT_CODE)


def override_arg(key: str, value: object) -> str:
    """``key=value`` as Hydra parses it back to exactly ``value``: quoted (Hydra's own
    quoting) when the value holds characters its grammar treats specially (``=``, ``,``,
    spaces, brackets, quotes, ``${``, ...). Shell-quote it too for a command line."""
    text = str(value)
    if _PLAIN_VALUE.fullmatch(text):
        return f"{key}={text}"
    text = text.replace("${", "\\${")  # a literal "${", not an interpolation (OmegaConf)
    return f"{key}={QuotedString(text=text, quote=Quote.single).with_quotes()}"
