"""User-facing errors: anything a user can fix (a path, a file, a config key) raises these.

Entry points turn them into one line on stderr and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode

USER_ERROR_EXIT_CODE = 2


class SegpetsError(Exception):
    """A problem the user can fix; the message names the file or config key involved."""


class DataError(SegpetsError):
    """A dataset layout or file problem (missing root, unreadable image, bad trimap)."""


class ConfigError(SegpetsError):
    """A config value that cannot work (unknown choice, non-positive size, wrong checkpoint)."""


class JobRefused(CompactHydraException):
    """A sweep job stopped by a user error (its ``segpets: error:`` line already printed).

    An ``Exception``, unlike ``SystemExit``: Hydra marks the job failed and runs the sweep's
    other jobs, then reports the failed ones (exit code 1), as it does for any failing job."""


class JobStopped(CompactHydraException):
    """A sweep job stopped by SIGINT/SIGTERM (its checkpoint saved and resume command printed),
    or not started because the sweep was interrupted (``segpets.sweep``)."""


@contextmanager
def user_errors(on_error: Callable[[], Any] | None = None) -> Iterator[None]:
    """Report ``SegpetsError`` as one line, ``segpets: error: ...``, then exit 2 (in a Hydra
    sweep: raise :class:`JobRefused` so the other jobs still run). ``on_error`` runs first
    (``segpets.command.record`` cleans up a refused run there).

    ``HYDRA_FULL_ERROR=1`` re-raises so developers still get the traceback.
    """
    try:
        yield
    except SegpetsError as err:
        if on_error is not None:
            on_error()
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        message = _original_message(str(err))
        print(f"segpets: error: {message}", file=sys.stderr, flush=True)
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            num = HydraConfig.get().job.num
            message = f"segpets: sweep job {num} stopped with a user error: {message}"
            raise JobRefused(message) from None
        raise SystemExit(USER_ERROR_EXIT_CODE) from None


def _original_message(text: str) -> str:
    """A DataLoader worker re-raises our error with its traceback folded into the message
    ("Caught DataError in DataLoader worker process 0. Original Traceback ..."); the user
    needs only the original last line."""
    if "Original Traceback" not in text:
        return text
    last = text.strip().splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last
