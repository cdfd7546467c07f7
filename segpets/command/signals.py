"""Ctrl-C on a sweep behaves as on a single run: running jobs save and say how to resume.

A terminal's Ctrl-C reaches the launching process and every job process (joblib's workers)
at once. Left alone, the launcher raises ``KeyboardInterrupt`` (a traceback) and joblib kills
its workers while they save, and a worker idle between jobs dies and breaks the pool.

So, in a sweep (POSIX), SIGINT is blocked in the launching process before Hydra starts; every
thread and job process inherits that mask, so Ctrl-C is never delivered out of turn. A relay
thread takes it (``sigtimedwait``) and hands it to the main thread's Python handler
(``_thread.interrupt_main``): in the launcher :func:`_on_sigint`, in a job during training
``segpets.callbacks.resume.Preemption`` (finish the batch, save ``last.ckpt``, print the resume
command), in a job outside training :func:`_job_sigint`. Job processes run a relay only while
a job runs (:func:`job_signals`); a Ctrl-C that arrives while a worker is idle waits, and its
next job does not start. The first stop is noted in a small file named by ``SEGPETS_SWEEP``
(inherited by job processes, removed at the end), so jobs not yet started do not start, and the
launcher exits ``128 + signal`` (130) once every job has returned. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import _thread
import contextlib
import multiprocessing.resource_tracker
import os
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from segpets.errors import JobStopped

ENV = "SEGPETS_SWEEP"  # "<launching pid>:<stop-note path>"
SIGINT_ONLY = {signal.SIGINT}


def _env() -> tuple[int, Path] | None:
    pid, sep, path = os.environ.get(ENV, "").partition(":")
    return (int(pid), Path(path)) if sep and pid.isdigit() else None


def request_stop(signum: int, overwrite: bool = False) -> None:
    """Note that the sweep was interrupted by ``signum``, and by which process (no-op outside
    a sweep; an earlier note is kept unless ``overwrite``)."""
    env = _env()
    if env is not None and (overwrite or not env[1].exists()):
        with contextlib.suppress(OSError):
            env[1].write_text(f"{signal.Signals(signum).name} {os.getpid()}")


def stop_requested() -> signal.Signals | None:
    """The signal that interrupted this sweep, or ``None``."""
    name, _ = _note()
    return None if name is None else signal.Signals.__members__.get(name, signal.SIGINT)


def _note() -> tuple[str | None, int | None]:
    env = _env()
    try:
        name, pid = env[1].read_text().split() if env else (None, None)
    except (OSError, ValueError):
        return None, None
    return name, int(pid) if pid and str(pid).isdigit() else None


def in_sweep_worker() -> bool:
    """Whether this process runs sweep jobs for another (launching) process."""
    env = _env()
    return env is not None and env[0] != os.getpid()


def _supported() -> bool:
    return os.name == "posix" and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sweep_signals(multirun: bool) -> Iterator[None]:
    """Around a sweep's launch, in the launching process (see the module docstring)."""
    if not multirun or not _supported():
        yield
        return
    note = Path(tempfile.gettempdir()) / f"segpets-sweep-{os.getpid()}-{uuid.uuid4().hex}.stop"
    os.environ[ENV] = f"{os.getpid()}:{note}"
    try:
        with _relayed(_on_sigint):
            yield
    except (SystemExit, KeyboardInterrupt) as stop:
        stopped = stop_requested()
        if stopped is None:
            raise
        if isinstance(stop, KeyboardInterrupt):
            print("segpets: stopped at once", file=sys.stderr, flush=True)
        raise SystemExit(128 + int(stopped)) from None
    finally:
        os.environ.pop(ENV, None)
        with contextlib.suppress(OSError):
            note.unlink()


@contextlib.contextmanager
def job_signals() -> Iterator[None]:
    """Around one sweep job (in any process): a job does not start once the sweep was
    interrupted; in a job process other than the launcher, SIGINT is relayed while it runs."""
    stopped = stop_requested()
    if stopped is not None:
        raise JobStopped(f"segpets: sweep interrupted by {stopped.name}: job not started")
    if not in_sweep_worker() or not _supported():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGINT_ONLY)  # as inherited; kept when idle
    if signal.sigtimedwait(SIGINT_ONLY, 0) is not None:  # Ctrl-C while this worker was idle
        request_stop(signal.SIGINT)
        raise JobStopped("segpets: sweep interrupted by SIGINT: job not started")
    with _relayed(_job_sigint, unblock=False):
        yield


@contextlib.contextmanager
def _relayed(handler: Any, unblock: bool = True) -> Iterator[None]:
    """SIGINT blocked in this thread (and so in threads and processes started from now on),
    relayed to ``handler`` (or whatever Python handler is installed meanwhile)."""
    previous = signal.signal(signal.SIGINT, handler)
    # Python's multiprocessing resource tracker unblocks SIGINT after starting (3.11: SIG_UNBLOCK,
    # not the previous mask); started first, it leaves our mask alone (joblib's workers use it)
    multiprocessing.resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGINT_ONLY)
    stop = threading.Event()
    relay = threading.Thread(target=_relay, args=(stop,), name="segpets-sigint", daemon=True)
    relay.start()
    try:
        yield
    finally:
        stop.set()
        relay.join()
        while signal.sigtimedwait(SIGINT_ONLY, 0) is not None:
            pass  # a Ctrl-C after the end: nothing left to stop
        signal.signal(signal.SIGINT, previous)
        if unblock:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGINT_ONLY)


def _relay(stop: threading.Event) -> None:
    while not stop.is_set():
        if signal.sigtimedwait(SIGINT_ONLY, 0.1) is not None:
            _thread.interrupt_main(signal.SIGINT)


def _on_sigint(signum: int, frame: Any) -> None:
    """The launcher's SIGINT: the first notes the stop, the second stops at once."""
    if _note()[1] == os.getpid():  # this process has seen a Ctrl-C already
        raise KeyboardInterrupt
    request_stop(signum, overwrite=True)  # a job process may have noted the same Ctrl-C first
    print(
        "segpets: interrupted (Ctrl-C): running jobs finish their batch, save a checkpoint and "
        "print how to resume; no new job starts (Ctrl-C again stops at once)",
        file=sys.stderr,
        flush=True,
    )


def _job_sigint(signum: int, frame: Any) -> None:
    """SIGINT in a sweep job outside training (set-up, test): end this job, start no other."""
    request_stop(signum)
    raise JobStopped("segpets: sweep job interrupted (Ctrl-C) outside training (nothing to save)")
