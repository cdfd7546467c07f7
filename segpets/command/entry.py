"""What every Hydra entry point checks on its command line before Hydra creates anything.

Hydra reports a bad override (an unknown key, bad syntax, an unknown config option) with a
multi-line message and exit code 1, and a value it cannot resolve (``???``, an unset
``${oc.env:...}``) only when something reads it. segpets composes the config as Hydra will,
from the same config search path (segpets' own configs in ``segpets.configs``, a
``--config-dir``, ``hydra.searchpath`` entries), and runs its config checks on it
(:mod:`segpets.command.checks`): each problem is one ``segpets: error:`` line naming the
override or key, exit code 2, and no run folder is created. A sweep's overrides are expanded
into its jobs, and every job is checked before any starts.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_automatic_config_search_path, get_args_parser
from hydra.core.config_search_path import SearchPathQuery
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.plugins.config_source import ConfigSource
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from segpets.checkpoints.trust import listed_targets
from segpets.command.checks import check_launch, check_resolvable, check_values
from segpets.command.overrides import sweep_jobs
from segpets.command.signals import sweep_signals
from segpets.errors import USER_ERROR_EXIT_CODE, ConfigError

CONFIG_PATH = "configs"  # every entry point's hydra.main(config_path=...), inside the package
MAX_JOBS_CHECKED = 64  # a bigger grid is left to Hydra (composing takes ~0.1 s a job)
SEARCHPATH_FORMS = "file:///absolute/folder, file://relative/folder or pkg://importable.package"


def entry_point(config_name: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Decorate a ``@hydra.main`` function: the config search path and group options, then
    override syntax and keys (of every job of a sweep), are checked first."""

    def wrap(hydra_main: Callable[[], Any]) -> Callable[[], Any]:
        @functools.wraps(hydra_main)
        def main() -> Any:
            multirun = check_command_line(sys.argv[1:], config_name)
            with sweep_signals(multirun):  # Ctrl-C on a sweep: jobs save, none starts anew
                return hydra_main()

        return main

    return wrap


def check_command_line(argv: list[str], config_name: str) -> bool:
    """Everything :func:`entry_point` checks, on ``argv`` (the arguments after the command);
    exits 2 with one line on the first problem. Returns whether this is a multirun (``-m``, or
    ``hydra.mode: MULTIRUN`` as the Optuna config sets)."""
    args, _ = get_args_parser().parse_known_args(argv)
    if args.config_path is not None:  # another primary config folder: Hydra's own checks
        return bool(args.multirun)
    config_name = args.config_name or config_name
    try:
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except HydraException as err:
        _fail(err)
    with _hydra(args.config_dir) as hydra, warnings.catch_warnings():
        # Hydra warns about a search-path entry that is not there; _check_sources refuses it
        warnings.filterwarnings("ignore", message=r"provider=.* is not available")
        searchpath = [o.input_line for o in overrides if o.get_key_element() == "hydra.searchpath"]
        _check_sources(hydra, config_name, searchpath)
        check_group_choices(hydra, config_name, args.overrides, searchpath)
        if args.cfg or args.help or args.hydra_help or args.info or args.shell_completion:
            return bool(args.multirun)
        return check_jobs(hydra, config_name, overrides, bool(args.multirun))


@contextmanager
def _hydra(config_dir: str | None) -> Iterator[Hydra]:
    """A Hydra instance with the search path ``hydra.main`` builds for segpets' commands:
    segpets' configs, Hydra's own, plugins', and ``--config-dir`` first, as Hydra adds it."""
    search_path = create_automatic_config_search_path(None, "segpets.train", CONFIG_PATH)
    if config_dir is not None:
        folder = Path(config_dir).expanduser().absolute()
        if not folder.is_dir():
            _fail(ConfigError(f"--config-dir: no such folder '{folder}'"))
        search_path.prepend("command-line", f"file://{folder}", SearchPathQuery("schema"))
    try:
        yield Hydra.create_main_hydra2(task_name="segpets", config_search_path=search_path)
    finally:
        GlobalHydra.instance().clear()


def _check_sources(hydra: Hydra, config_name: str, searchpath: list[str]) -> None:
    """Every config source the user added to the search path (``--config-dir``,
    ``hydra.searchpath=[...]`` on the command line or in a config) exists and holds configs:
    Hydra only warns about one that does not, and then reports its options as missing."""
    try:
        _, repo = hydra.config_loader._parse_overrides_and_create_caching_repo(
            config_name, searchpath
        )
    except (ValueError, HydraException) as err:  # a scheme Hydra has no source for, a non-list
        detail = _first_line(err).removeprefix("hydra.searchpath ")
        _fail(ConfigError(f"hydra.searchpath: {detail} ({SEARCHPATH_FORMS})"))
    for source in repo.get_sources():
        if source.provider != "command-line" and not source.provider.startswith("hydra.searchpath"):
            continue  # segpets' own configs, Hydra's, plugins'
        where = "--config-dir" if source.provider == "command-line" else "hydra.searchpath"
        if not source.available():
            _fail(
                ConfigError(
                    f"{where}: '{source.full_path()}' is not a config folder or package "
                    f"({SEARCHPATH_FORMS})"
                )
            )
        if not _holds_configs(source):
            _fail(ConfigError(f"{where}: '{source.full_path()}' holds no configs (*.yaml)"))


def _holds_configs(source: ConfigSource, group: str = "") -> bool:
    """Whether ``source`` has a config (a ``.yaml`` file) in ``group`` or any group below."""
    if source.list(group, ObjectType.CONFIG):
        return True
    subgroups = source.list(group, ObjectType.GROUP)
    return any(_holds_configs(source, f"{group}/{g}" if group else g) for g in subgroups)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def check_group_choices(
    hydra: Hydra, config_name: str, argv: list[str], searchpath: list[str]
) -> None:
    """Reject ``group=option`` overrides naming no option of a config group in any folder of
    the search path, as one line and exit 2 listing every option there (segpets' and yours):
    a single option, a sweep's (``a,b``) or a list's (``logger=[csv,mlflow]``). Hydra would
    reject them too, but with exit 1 and a multi-line message; other sweep syntax
    (``choice(...)``, ``${...}``, nested lists) is left to Hydra."""
    loader = hydra.config_loader
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        named = _named_options(value)
        if not sep or "." in key or named is None:
            continue
        options = loader.get_group_options(key, ObjectType.CONFIG, config_name, searchpath)
        if not options and not loader.get_group_options(key, None, config_name, searchpath):
            continue  # not a config group
        for option in named:
            if option not in options and option != "null":
                listed = value.strip().startswith("[")  # name the list as typed
                what = f"{key}={value}: '{option}'" if listed else f"{key}={option}"
                _fail(
                    ConfigError(
                        f"{what}: no such option in config group '{key}' (segpets' configs"
                        f"{_and_yours(hydra, searchpath)}); choices: {', '.join(options)}"
                    )
                )


def _named_options(value: str) -> list[str] | None:
    """The option names a group override chooses: ``a``, ``a,b`` (a sweep), ``[a,b]`` (a
    list of options); ``None`` for syntax only Hydra reads."""
    listed = re.fullmatch(r"\[([^\[\]]*)\]", value.strip())
    if listed:
        value = listed.group(1)
    elif any(c in value for c in "[]($"):
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _and_yours(hydra: Hydra, searchpath: list[str]) -> str:
    own = [p.path for p in hydra.config_loader.get_search_path().get_path()]
    own = [p for p in own if p.startswith("file://") and p not in ("file://",)]
    extra = own + [p for o in searchpath for p in _listed(o)]
    return f" and {', '.join(extra)}" if extra else ""


def _listed(override: str) -> list[str]:
    value = OverridesParser.create().parse_override(override).value()
    return [str(v) for v in value] if isinstance(value, list) else []


def check_jobs(hydra: Hydra, config_name: str, overrides: list, multirun: bool = False) -> bool:
    """Compose ``config_name`` with the overrides as Hydra will (each job of a sweep) and run
    segpets' config checks on it; exit 2 with one line on the first failure. Sweeps Hydra's
    basic sweeper cannot expand are left to Hydra. A sweep (``a=1,2``) without ``-m``
    (``multirun``) or ``hydra.mode: MULTIRUN`` in the config is one line too. Returns whether
    this is a multirun."""
    jobs = sweep_jobs(overrides)
    if jobs is None or len(jobs) > MAX_JOBS_CHECKED:
        return True
    sweeps = [o for o in overrides if o.is_sweep_override()]
    for job in jobs:
        shown = job if len(jobs) > 1 else None
        try:
            cfg = hydra.compose_config(config_name, job, RunMode.RUN)
        except (HydraException, OmegaConfBaseException) as err:
            _fail(_unchosen_option(hydra, config_name, job, err) or err, shown)
        try:
            check_job(cfg)
        except ConfigError as err:
            _fail(err, shown)
        multirun = multirun or cfg.hydra.mode == RunMode.MULTIRUN
        if sweeps and not multirun:
            _fail(
                ConfigError(
                    f"{sweeps[0].input_line}: several values sweep, one run each, which needs -m "
                    f"(--multirun); for one run give one value, or quote a string holding "
                    f"commas: {sweeps[0].get_key_element()}='...'"
                )
            )
    return multirun


def _unchosen_option(
    hydra: Hydra, config_name: str, job: list[str], err: Exception
) -> ConfigError | None:
    """``callbacks.early_stopping.patience=3`` when ``early_stopping`` is an option of the
    group ``callbacks`` that this run did not choose: how to choose it (Hydra's own hint,
    ``+callbacks.early_stopping.patience=3``, adds a node without its ``_target_``)."""
    found = re.search(r"Could not override '([\w.]+)'", str(err))
    parts = found.group(1).split(".") if found else []
    if len(parts) < 3:
        return None
    group, option, key = parts[0], parts[1], found.group(1)
    if option not in hydra.config_loader.get_group_options(group, ObjectType.CONFIG, config_name):
        return None
    given = [o.split("=", 1)[1] for o in job if o.lstrip("+~").split("=", 1)[0] == group]
    if given:  # the command line's own choice (a list is not among Hydra's runtime choices)
        current = given[-1]
    else:
        rest = [o for o in job if not o.lstrip("+~").startswith(f"{group}.{option}.")]
        try:
            chosen = hydra.compose_config(config_name, rest, RunMode.RUN).hydra.runtime.choices
        except (HydraException, OmegaConfBaseException):
            return None
        current = str(chosen.get(group) or "default")
    current = current.strip("[]").replace(" ", "")
    return ConfigError(
        f"{key}: '{option}' is not among this run's {group} ({current}); choose it too: "
        f"'{group}=[{current},{option}]' {key}=..."
    )


def check_job(cfg: DictConfig) -> None:
    """segpets' config checks (:mod:`segpets.command.checks`) on one composed job config (with
    its ``hydra`` node), as the task will see it: Hydra's run folder filled in, so values that
    interpolate ``${hydra:runtime.output_dir}`` resolve too; the command's own keys are typed
    by its config name (``hydra.job.config_name``). Raises ``ConfigError``."""
    hydra_config = HydraConfig.instance()
    previous = hydra_config.cfg
    # copies of the task's keys and of the hydra node (each copied once: ``cfg`` stays as it
    # is), joined as Hydra's HydraConfig.set_config joins them, so ${hydra:...} resolves in the
    # task and the hydra node's interpolations reach the task's keys
    task = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    OmegaConf.set_struct(task, OmegaConf.is_struct(cfg))
    hydra_node = OmegaConf.masked_copy(cfg, "hydra")
    with open_dict(hydra_node):
        hydra_node.hydra.runtime.output_dir = str(Path.cwd() / "<run folder>")
    hydra_node.hydra._set_parent(task)
    OmegaConf.set_readonly(hydra_node.hydra, True)
    try:
        hydra_config.cfg = hydra_node
        if hydra_node.hydra.job.chdir:
            check_launch()
        check_resolvable(task)
        check_values(task, OmegaConf.select(hydra_node, "hydra.job.config_name", default=None))
        listed_targets(task)  # each trusted_targets entry imports, before any work
        for key in ("hydra.run.dir", "hydra.sweep.dir"):  # resolved by Hydra before the task
            OmegaConf.select(hydra_node, key, throw_on_missing=False)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{getattr(err, 'full_key', None)}: {str(err).splitlines()[0]}") from None
    finally:
        hydra_config.cfg = previous


def _fail(err: Exception, job: list[str] | None = None) -> NoReturn:
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    detail = " ".join(line for line in lines if not line.startswith(("full_key:", "object_type")))
    where = f" (sweep job {' '.join(job)})" if job else ""
    print(f"segpets: error: {detail or type(err).__name__}{where}", file=sys.stderr, flush=True)
    raise SystemExit(USER_ERROR_EXIT_CODE)
