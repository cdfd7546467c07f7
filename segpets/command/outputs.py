"""How commands write files: whole or not at all.

Every file segpets writes for a user (checkpoints, exports, masks, reports, CSVs, panels, split
files, run records, copied checkpoints) goes through :func:`atomic_write`: the content is
written to a temporary file beside the target, flushed to disk, then renamed over it.
``os.replace`` within one folder is atomic on POSIX and Windows, so a reader (or a rerun after
a kill) sees the old file or the complete new one, never a torn one; and a rename replaces a
symbolic link at the target instead of writing through it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

TEMP_PREFIX = ".tmp-"  # partial writes are named .tmp-<name>-XXXX; never matched as *.ckpt


def temp_path(path: Path, suffix: str = "") -> Path:
    """A new, empty file beside ``path`` named ``.tmp-<name>-<random><suffix>``, created with
    ``O_EXCL`` (never an existing file or link) and the permissions any new file gets
    (0o666 less the umask, like ``open(path, "w")``; ``tempfile.mkstemp`` would give 0o600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    while True:
        tmp = path.parent / f"{TEMP_PREFIX}{path.name}-{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(tmp, flags, 0o666))
            return tmp
        except FileExistsError:
            continue


def atomic_write(path: str | Path, write: Callable[[Path], None], suffix: str = "") -> Path:
    """Call ``write(temp)`` to fill a temporary file beside ``path``, fsync it, then rename it
    to ``path`` (and fsync the folder, so the rename survives a power loss). On any failure,
    ``KeyboardInterrupt`` included, the temporary file is removed and ``path`` is untouched (a
    SIGKILL leaves the temporary file, never a torn ``path``). ``suffix``: the temporary
    file's name ends in it (for writers that choose a format by extension, e.g. ``.onnx``).
    Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path, suffix)
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


def atomic_write_text(path: str | Path, text: str) -> Path:
    """``path`` holding ``text`` (UTF-8), written with :func:`atomic_write`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op elsewhere)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
