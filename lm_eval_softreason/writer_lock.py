"""One writer per output file: an OS lock on a sidecar ``<path>.lock`` that holds the pid.

Two runs writing one trace or ``--use_cache`` database would mix their records, so the second
is refused at start, naming the path and the holder. ``flock`` is dropped by the kernel however
the process ends, so a leftover lock file never blocks a rerun (docs/architecture.md, "Traces
and writer locks").
"""

from __future__ import annotations

import atexit
import fcntl
import os
from pathlib import Path
from typing import IO

from lm_eval_softreason.errors import UserError


class LockedError(UserError):
    """Another live process writes the file."""


# Lock files this process holds: resolved path -> [open lock file, number of holders, pid].
_HELD: dict[Path, list] = {}


class WriterLock:
    """Holds ``<path>.lock`` for this process until :meth:`release` (or the process ends)."""

    def __init__(self, path: str | os.PathLike, what: str, suffix: str = ".lock") -> None:
        """Take the lock file ``<path><suffix>``, or raise :class:`LockedError` naming
        ``what`` (e.g. ``trace_path``), the path and the holder's pid."""
        self.lock_path = Path(f"{path}{suffix}")
        self._key = self.lock_path.resolve()
        self._released = False
        if self._key in _HELD:
            _HELD[self._key][1] += 1
        else:
            _HELD[self._key] = [_acquire(self.lock_path, what, path), 1, os.getpid()]

    def release(self) -> None:
        """Drop this hold; the last one removes the lock file and unlocks it (idempotent)."""
        if self._released:
            return
        self._released = True
        held = _HELD[self._key]
        held[1] -= 1
        if held[1] == 0:
            del _HELD[self._key]
            _unlock(self._key, held)


def _unlock(lock_path: Path, held: list) -> None:
    """Remove the lock file, then close it (which drops the lock)."""
    lock_path.unlink(missing_ok=True)
    held[0].close()


@atexit.register
def _release_all() -> None:
    """At a normal exit, remove this process's lock files (a forked child that inherited the
    table leaves its parent's alone)."""
    for lock_path, held in list(_HELD.items()):
        if held[2] == os.getpid():
            del _HELD[lock_path]
            _unlock(lock_path, held)


def _acquire(lock_path: Path, what: str, path: str | os.PathLike) -> IO[str]:
    """Open and flock ``lock_path`` and write our pid in it; the open file keeps the lock."""
    while True:
        fh = open(lock_path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise LockedError(
                f"{what} {path} is being written by another process (pid {holder}); wait "
                f"for it to finish or choose another path") from None
        # A releaser removes the file while holding the lock: if it did so between our
        # open and flock, we locked an orphan and must start over on the new file.
        try:
            if os.stat(lock_path).st_ino == os.fstat(fh.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        fh.close()
    fh.truncate(0)
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh
