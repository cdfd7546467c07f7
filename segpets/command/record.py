"""A run's record on disk, written once its checks pass: a refused run leaves no trace.

Hydra would write ``<run dir>/.hydra/{config,hydra,overrides}.yaml`` and open
``<task_name>.log`` before the task function runs, so a run refused by a check (a folder that
already holds checkpoints, a bad checkpoint, a bad value) had already rewritten an existing
folder's record. ``configs/hydra/default.yaml`` turns both off; :func:`task_run` writes them in
:func:`accept_run`, which each entry point calls after every check that can refuse:

* the log holds what the console showed: stdout and stderr are teed into memory from the
  task's start, into ``<run dir>/<task_name>.log`` from acceptance on (Lightning's messages,
  the tested checkpoint, the test Dice, warnings and errors included) as plain text: progress
  bar redraws (writes that start with a carriage return), colours, cursor moves and other
  control characters dropped, trailing blanks trimmed;
* with ``extras.print_config``, ``<run dir>/config_tree.log`` holds the printed config tree;
* a run refused before acceptance writes none of these, and the run folder Hydra created is
  removed again if it is empty (files are never deleted);
* before anything else, the run claims its folder (:mod:`segpets.command.claim`): a folder in
  use by a live run, or one an earlier run used that this run does not continue, is refused.

Only global rank 0 writes (Lightning's DDP processes run the same entry point). Record files
are written whole (:func:`segpets.command.outputs.atomic_write`), and the log is never opened
through a symbolic link.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from segpets.command.claim import RECORD_DIR, Claim, claim_folder
from segpets.command.console import plain_text, quiet_libraries
from segpets.command.extras import save_config_tree
from segpets.command.outputs import atomic_write_text
from segpets.command.signals import job_signals
from segpets.errors import ConfigError, JobStopped, SegpetsError, user_errors

_REDRAW = re.compile(r"\r[^\n]*")  # a progress bar's redraw: carriage return to line end


class ConsoleLog:
    """Console text, line by line per stream; kept in memory until :meth:`open`."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._partial: dict[str, str] = {}
        self._bar: dict[str, bool] = {}
        self._file: TextIO | None = None
        self.discarded = False

    def feed(self, stream: str, text: str) -> None:
        """One ``write`` to ``stream``. A progress bar redraws itself with writes starting
        with a carriage return: those (up to a newline) are dropped, and so is the newline a
        closing bar ends with; every other write is kept, even while a bar is on screen."""
        if self.discarded:
            return
        if self._bar.get(stream) and text.startswith("\n"):
            text = text[1:]  # the newline that ends a progress bar's line
        self._bar[stream] = "\r" in text
        text = _REDRAW.sub("", text)
        *complete, self._partial[stream] = (self._partial.get(stream, "") + text).split("\n")
        for line in complete:
            self._write_plain(line)

    def _write_plain(self, line: str) -> None:
        """``line`` as plain text; a line that held only control sequences is no line."""
        plain = plain_text(line).rstrip()
        if plain or not line.strip():
            self._write(plain + "\n")

    def _write(self, line: str) -> None:
        if self._file is None:
            self._lines.append(line)
        else:
            self._file.write(line)
            self._file.flush()

    def open(self, path: Path) -> None:
        """Append to ``path`` from now on (never through a symbolic link: ``ConfigError``)."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags, 0o666)
        except OSError as err:
            reason = "a symbolic link" if err.errno == errno.ELOOP else err.strerror
            raise ConfigError(f"cannot write the run log '{path}': it is {reason}") from None
        self._file = open(fd, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        self._file.writelines(self._lines)
        self._file.flush()
        self._lines = []

    def close(self) -> None:
        for rest in self._partial.values():
            if rest:
                self._write_plain(rest)
        self._partial = {}
        if self._file is not None:
            self._file.close()
            self._file = None

    def discard(self) -> None:
        self.discarded, self._lines, self._partial = True, [], {}


class _Tee:
    """A text stream that also feeds a :class:`ConsoleLog`; everything else is delegated."""

    def __init__(self, stream: TextIO, log: ConsoleLog, name: str) -> None:
        self._stream, self._log, self._name = stream, log, name

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        self._log.feed(self._name, text)
        return written

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _tee_console(log: ConsoleLog) -> Iterator[None]:
    """sys.stdout/sys.stderr and every logging handler already writing to them (Hydra's
    console, Lightning's own) also feed ``log``, until the block ends."""
    originals = {"out": sys.stdout, "err": sys.stderr}
    tees = {name: _Tee(stream, log, name) for name, stream in originals.items()}
    sys.stdout, sys.stderr = tees["out"], tees["err"]
    moved = []
    for handler in _stream_handlers():
        for name, stream in originals.items():
            if handler.stream is stream:
                handler.setStream(tees[name])
                moved.append((handler, stream))
    try:
        yield
    finally:
        for handler, stream in moved:
            handler.setStream(stream)
        sys.stdout, sys.stderr = originals["out"], originals["err"]


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    return [
        h
        for lg in loggers
        for h in lg.handlers
        if type(h) is logging.StreamHandler  # not FileHandlers (their stream is a file)
    ]


class TaskRun:
    """The state of one entry-point task: its folder's claim, accepted or not, its console log.

    ``reuse``: what the command may do with a folder an earlier run used
    (:data:`segpets.command.claim.REUSE`)."""

    def __init__(self, cfg: DictConfig, record: bool, reuse: str = "never") -> None:
        self.cfg, self.record, self.reuse, self.accepted = cfg, record, reuse, False
        self.log = ConsoleLog()
        hydra = HydraConfig.get() if HydraConfig.initialized() else None
        self.output_dir = Path(hydra.runtime.output_dir) if hydra else None
        self.command = f"segpets.{hydra.job.name}" if hydra else "segpets"
        self.log_name = f"{cfg.get('task_name') or (hydra.job.name if hydra else 'run')}.log"
        self.stop_at = _log_dir(cfg)
        self.claim: Claim | None = None

    def start(self) -> None:
        """Claim the run folder (rank 0) before anything is written: ``ConfigError`` when it
        is in use, or used before and this command may not continue it."""
        if self.output_dir is None or rank_zero_only.rank != 0:
            return
        self.claim = claim_folder(self.output_dir, self.command, _folder_key(self), self.reuse)

    def accept(self, continues: bool = False) -> None:
        """The checks passed: write the record and the log (rank 0 only). ``continues``: this
        run continues the work of the earlier run whose folder it got (a training resuming
        from that folder's checkpoints); without it, such a folder is refused now."""
        if self.accepted:
            return
        if self.claim is not None and self.claim.used and self.reuse == "resume" and not continues:
            raise self.claim.refusal()
        if self.output_dir is None or rank_zero_only.rank != 0:
            self.accepted = True
            self.log.discard()
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.log.open(self.output_dir / self.log_name)  # a link there: refused, nothing written
        if self.claim is not None and self.claim.used:
            self.claim.adopt()  # the folder is this run's now
        self.accepted = True
        if self.record:
            write_record(self.cfg, self.output_dir / RECORD_DIR)
            save_config_tree(self.cfg, self.output_dir)  # with extras.print_config

    def owns_folder(self) -> bool:
        """Whether the folder is this run's to write into before acceptance decided it (a new
        or empty one): a crash then keeps the record and the traceback there."""
        return self.claim is None or not self.claim.used

    def refuse(self) -> bool:
        """A user error before acceptance: nothing is written, the claim this run made and the
        empty run folder that Hydra created go again. Whether this was a refusal (not yet
        accepted)."""
        if self.accepted:
            return False
        self.log.discard()
        if self.claim is not None:
            self.claim.withdraw()
        if self.output_dir is not None and rank_zero_only.rank == 0:
            remove_empty_folders(self.output_dir, self.stop_at)
        return True

    def end(self) -> None:
        self.log.close()
        if self.claim is not None:
            self.claim.release()


def _folder_key(run: TaskRun) -> str:
    """The config key that names the run folder, for messages."""
    if run.reuse == "outputs":
        return "output_dir"
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    multirun = hydra is not None and hydra.mode == RunMode.MULTIRUN
    return "hydra.sweep.dir" if multirun else "hydra.run.dir"


_CURRENT: list[TaskRun] = []


@contextlib.contextmanager
def task_run(cfg: DictConfig, record: bool = True, reuse: str = "never") -> Iterator[TaskRun]:
    """Run an entry point's task: its folder claimed first, console teed, user errors as one
    line (exit 2, or a ``JobRefused`` in a sweep), a refusal cleaned up, the log closed and the
    folder released at the end. ``record``: also write ``.hydra/`` (not for predict, whose
    folder holds only masks); ``reuse``: see :class:`TaskRun`."""
    quiet_libraries()
    run = TaskRun(cfg, record, reuse)
    _CURRENT.append(run)
    try:
        with _tee_console(run.log), user_errors(on_error=run.refuse), job_signals():
            run.start()
            try:
                yield run
            except (SegpetsError, JobStopped):
                raise  # one line (user_errors), or a sweep's Ctrl-C (segpets.sweep)
            except Exception:  # a bug, not a user error: keep the record and the traceback
                if run.owns_folder():
                    run.accept(continues=True)
                    run.log.feed("err", traceback.format_exc())
                else:  # never into a folder another run left
                    run.refuse()
                raise
    except JobStopped:
        run.refuse()  # stopped before its checks passed (not started): no trace
        raise
    finally:
        run.end()
        _CURRENT.remove(run)


def accept_run(continues: bool = False) -> None:
    """Called by entry points once every check that can refuse has passed (no-op outside a
    :func:`task_run`, e.g. when tests call ``train(cfg)`` directly). ``continues``: see
    :meth:`TaskRun.accept`."""
    if _CURRENT:
        _CURRENT[-1].accept(continues)


def write_record(cfg: DictConfig, folder: Path) -> None:
    """What Hydra writes into ``.hydra/``, in its format: the task config, Hydra's config and
    the command-line overrides."""
    hydra_root = HydraConfig.instance().cfg
    atomic_write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic_write_text(folder / "hydra.yaml", OmegaConf.to_yaml(hydra_root))
    atomic_write_text(folder / "overrides.yaml", OmegaConf.to_yaml(hydra_root.hydra.overrides.task))


def remove_empty_folders(folder: Path, stop_at: Path | None) -> None:
    """Remove ``folder`` if nothing but empty folders is inside, then its empty parents up to
    and including ``stop_at`` (when ``folder`` lies under it). Never removes a file."""
    if not folder.is_dir():
        return
    for root, _, _ in sorted(os.walk(folder), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):
            os.rmdir(root)
    if stop_at is None or not folder.resolve().is_relative_to(stop_at):
        return
    for parent in folder.resolve().parents:
        if not parent.is_relative_to(stop_at):
            break
        with contextlib.suppress(OSError):
            os.rmdir(parent)


def _log_dir(cfg: DictConfig) -> Path | None:
    value = OmegaConf.select(cfg, "paths.log_dir", default=None)
    return Path(value).expanduser().resolve() if isinstance(value, str) else None
