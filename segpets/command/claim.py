"""One run per folder: a run claims its folder before it writes anything there.

The claim is a small file, ``<run folder>/.segpets-run`` (JSON: command, pid, host, start
time), created atomically (written and locked under a temporary name, then hard-linked into
place, which fails if it exists) and kept locked (``flock``) while the run lives; the kernel
drops the lock when the process ends, however it ends. So:

* a second run started in a folder whose run is still going (two trainings with one
  ``hydra.run.dir``, two predicts into one ``output_dir``) finds the claim locked and is
  refused in one line, before writing anything;
* a folder an earlier run used (its claim, or a run record or other files from before claims
  existed) is only taken by a run that continues that run's work: a training resuming from
  that folder's own checkpoints, a predict completing its own outputs
  (:data:`REUSE` says which command may); any other run is refused (e.g. ``segpets.eval
  hydra.run.dir=<training run>`` never rewrites that run's ``.hydra/``);
* a refused run removes the claim it created (never one it found), so the folder it was
  given is left as it was.

Only global rank 0 claims (Lightning's DDP processes run the same entry point). Where the file
system cannot lock (``flock`` unsupported), the claim still decides ownership, and a second
run at the same time is refused as "used by another run" instead of "in use".
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segpets.command.outputs import TEMP_PREFIX, temp_path
from segpets.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no flock; ownership is still checked, liveness is not
    fcntl = None  # type: ignore[assignment]

CLAIM = ".segpets-run"
RECORD_DIR = ".hydra"
# What a command may do with a folder an earlier run used: "never" (eval, export, bench: a new
# or empty folder only), "resume" (train: only to continue from that folder's checkpoints,
# decided once the checkpoint is known), "outputs" (predict: a folder of predict outputs or
# of other files, never another command's run folder; each output is then checked).
REUSE = ("never", "resume", "outputs")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


@dataclass
class Claim:
    """This run's hold on ``folder``: the locked claim file (``fd``), whether this run created
    it, and what an earlier run left (``earlier``: its claim, ``{}`` if unreadable, ``None``
    if there was none; ``found``: the entries the folder held, the claim aside)."""

    folder: Path
    command: str
    key: str  # the config key naming the folder, for messages
    fd: int | None = None
    created: bool = False
    earlier: dict[str, Any] | None = None
    found: list[str] = field(default_factory=list)

    @property
    def used(self) -> bool:
        """Whether an earlier run (or anything else) used the folder before this run."""
        return self.earlier is not None or bool(self.found)

    def used_by_another_command(self) -> bool:
        """An earlier run of another command, or a run record (``.hydra/``) of any."""
        other = self.earlier is not None and self.earlier.get("command") != self.command
        return other or RECORD_DIR in self.found

    def refusal(self) -> ConfigError:
        """The one-line error for a run that may not use this (used) folder."""
        if self.earlier:
            what = f"the files of another run ({describe(self.earlier, live=False)})"
        else:
            shown = ", ".join(self.found[:4]) + (" ..." if len(self.found) > 4 else "")
            what = f"files of another run or program ({shown})"
        return ConfigError(
            f"{self.key}: '{self.folder}' already holds {what}; a run writes only into a new or "
            f"empty folder (or continues its own): drop {self.key} to get a fresh folder, or "
            f"choose another"
        )

    def adopt(self) -> None:
        """This run continues the folder's earlier run: the claim now names this run."""
        if self.fd is not None and not self.created:
            os.ftruncate(self.fd, 0)
            os.lseek(self.fd, 0, os.SEEK_SET)
            os.write(self.fd, _record(self.command))
            os.fsync(self.fd)

    def release(self) -> None:
        """The run ended: unlock (the claim file stays: the folder is this run's)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def withdraw(self) -> None:
        """The run was refused: remove the claim if this run created it, and unlock."""
        if self.created:
            with contextlib.suppress(OSError):
                (self.folder / CLAIM).unlink()
        self.release()


def claim_folder(folder: str | Path, command: str, key: str, reuse: str = "never") -> Claim:
    """Claim ``folder`` (created if missing) for this run of ``command``; ``key`` names the
    folder's config key in messages, ``reuse`` is the command's rule (:data:`REUSE`).

    Raises ``ConfigError`` (nothing written, nothing of the folder changed) when the folder
    is in use by a live run, or when an earlier run used it and ``reuse`` says this command
    may not continue it (``"resume"`` is decided later: :meth:`Claim.refusal`)."""
    if reuse not in REUSE:
        raise ValueError(f"reuse must be one of {REUSE}, got {reuse!r}")
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        found = sorted(
            name
            for name in os.listdir(folder)
            if name != CLAIM and not name.startswith(f"{TEMP_PREFIX}{CLAIM}-")
        )
        fd = _create(folder / CLAIM, _record(command))
    except OSError as err:  # a read-only or full folder, a file in the way, ...
        raise ConfigError(f"{key}: cannot write into '{folder}': {err.strerror}") from None
    claim = Claim(folder, command, key, fd=fd, found=found)
    path = folder / CLAIM
    if fd is not None:
        claim.created = True
    else:
        claim.fd, claim.earlier = _take_over(path, claim)
    if claim.used and (
        reuse == "never" or (reuse == "outputs" and claim.used_by_another_command())
    ):
        error = claim.refusal()
        claim.withdraw()
        raise error
    return claim


def describe(record: dict[str, Any], live: bool = True) -> str:
    """``segpets.train, pid 123 on host, started 2026-01-01 12:00:00 UTC`` of a claim (no
    process for a run that ended: ``live=False``)."""
    parts = [str(record.get("command", "segpets"))]
    if live and record.get("pid"):
        parts.append(f"pid {record['pid']} on {record.get('host', '?')}")
    if record.get("started"):
        parts.append(f"started {record['started']}")
    return ", ".join(parts)


def _record(command: str) -> bytes:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    record = {"command": command, "pid": os.getpid(), "host": socket.gethostname(), "started": now}
    return (json.dumps(record) + "\n").encode()


def _lock(fd: int) -> bool:
    """Lock the open file ``fd`` exclusively without waiting; False when another process holds
    it. True where locks are unsupported (nothing to wait for, nothing to learn)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as err:  # ENOLCK, EOPNOTSUPP, ...: a file system without locks
        return err.errno not in (errno.EAGAIN, errno.EACCES)
    return True


def _create(path: Path, content: bytes) -> int | None:
    """A new claim file at ``path`` holding ``content``, locked from the moment it appears
    (written and locked under a temporary name, then hard-linked, which fails if ``path``
    exists); its open descriptor, or ``None`` when a claim exists already."""
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_RDWR | _NOFOLLOW)
    try:
        _lock(fd)  # uncontended: nobody else knows this file
        os.write(fd, content)
        os.fsync(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            os.close(fd)
            return None
        except OSError:  # no hard links on this file system: create in place instead
            os.close(fd)
            return _create_in_place(path, content)
        return fd
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _create_in_place(path: Path, content: bytes) -> int | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)
    except FileExistsError:
        return None
    _lock(fd)
    os.write(fd, content)
    os.fsync(fd)
    return fd


def _take_over(path: Path, claim: Claim) -> tuple[int, dict[str, Any]]:
    """Open and lock an existing claim; (descriptor, its content). ``ConfigError`` when a live
    run holds it, or when it is not a claim file (a link, say) or cannot be opened."""
    try:
        fd = os.open(path, os.O_RDWR | _NOFOLLOW)
    except OSError as err:
        reason = "a symbolic link" if err.errno == errno.ELOOP else err.strerror
        raise ConfigError(
            f"{claim.key}: cannot claim '{claim.folder}': its claim file '{path}' is "
            f"{reason}; choose another folder"
        ) from None
    earlier = _read(fd)
    if not _lock(fd):
        os.close(fd)
        raise ConfigError(
            f"{claim.key}: '{claim.folder}' is in use by another run ({describe(earlier)}); "
            f"wait for it to end, or choose another folder"
        )
    return fd, _read(fd)


def _read(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        record = json.loads(os.read(fd, 1 << 16).decode())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
