"""A quiet console: what libraries print that says nothing about the run is dropped at its
source, and the run log keeps text without terminal control sequences.

* Lightning's "💡 Tip" adverts (litlogger, litmodels), printed by every Trainer: dropped by a
  filter on Lightning's rank-zero loggers (:func:`quiet_libraries`);
* Lightning's warning that ``isinstance(treespec, LeafSpec)`` is deprecated (its own code
  under torch >= 2.10, nothing a user can change): ignored;
* Lightning's "Received SIGTERM" when segpets forwards a Ctrl-C to Lightning's graceful stop:
  :func:`without_sigterm_notice` (``segpets.callbacks.resume.Preemption`` says "interrupted");
* :func:`plain_text`: a console line as a file should hold it: ANSI escape sequences (colours,
  cursor moves of nested progress bars) and other control characters removed.

Alembic's migration lines (Optuna's storage plugin, MLflow's SQLite store) are silenced in
``configs/hydra/default.yaml`` (logger ``alembic`` at WARNING).
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator

ADVERTS = ("💡 Tip:",)
RANK_ZERO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)
SIGNAL_LOGGER = "lightning.pytorch.trainer.connectors.signal_connector"
# CSI sequences (colours, cursor moves: ESC [ ... letter), other ESC sequences, and control
# characters other than tab and newline
_RANK = re.compile(r"^\[rank: \d+\] ")
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]|[\x00-\x08\x0b-\x1f\x7f]")


class _DropMessages(logging.Filter):
    """Drops log records whose message starts with one of ``prefixes``, after the
    ``[rank: N] `` Lightning puts first where a rank is known (``rank_prefixed_message``)."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not _RANK.sub("", str(record.msg), count=1).startswith(self.prefixes)


def quiet_libraries() -> None:
    """Install the filters above (idempotent)."""
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(ADVERTS))
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


@contextlib.contextmanager
def without_sigterm_notice() -> Iterator[None]:
    """Lightning's signal handler logs "Received SIGTERM: <n>" for whatever signal segpets
    hands it; within this block it does not (segpets has said what happened)."""
    logger = logging.getLogger(SIGNAL_LOGGER)
    drop = _DropMessages(("Received SIGTERM",))
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def plain_text(text: str) -> str:
    """``text`` without ANSI escape sequences or control characters (tab and newline kept)."""
    return _ANSI.sub("", text)
