"""How commands write files: whole or not at all.

Every file segpets writes for a user (checkpoints, exports, copied checkpoints) goes through
:func:`atomic_write`: the content is written to a temporary file beside the target, flushed to
disk, then renamed over it. ``os.replace`` within one folder is atomic on POSIX and Windows, so
a reader (or a rerun after a kill) sees the old file or the complete new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

TEMP_PREFIX = ".tmp-"  # partial writes are named .tmp-<name>-XXXX; never matched as *.ckpt


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(temp)`` to fill a temporary file beside ``path``, fsync it, then rename it
    to ``path`` (and fsync the folder, so the rename survives a power loss). On any failure,
    ``KeyboardInterrupt`` included, the temporary file is removed and ``path`` is untouched.
    Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}-", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> Path:
    """``path`` holding ``data``, written with :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op elsewhere)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
