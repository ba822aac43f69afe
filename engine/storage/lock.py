"""One daemon per state database: an exclusive lock on a file beside it, held for the daemon's life.

SQLite's own locking lets two writers take turns, which is exactly wrong here: two daemons on
one file would both recover the same runs, hand out the same journal seqs and fail at their
first commit on a UNIQUE constraint (or worse, interleave orders). So ``tickflow run`` takes an
``flock`` on ``<db>.lock`` before it opens the database and keeps it until it exits; a second
daemon is refused at start with the file and the holder named.

``flock`` is released by the kernel when the process dies however it dies (SIGKILL included),
so a crash never leaves a stale lock behind; the file itself is never removed (unlinking it
would let a third process lock a new inode while the second still holds the old one).
Readers (``tickflow status --db``) do not take it: WAL lets them read beside the writer.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
import time
from pathlib import Path
from typing import Final

from engine.core.errors import StorageError

__all__ = ["StateLock", "lock_path"]

_HOLDER_MAX: Final = 512  # bytes of the holder line shown in the refusal


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


class StateLock:
    """``acquire()`` or :class:`StorageError`; ``release()`` (idempotent) at the end."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.path = lock_path(db)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise StorageError(
                    f"{self.db}: database is read-only (cannot create the lock file "
                    f"{self.path}: {exc.strerror}); tickflow needs to write its state here"
                ) from None
            raise StorageError(f"{self.db}: cannot open the lock file {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StorageError(
                    f"{self.db}: in use by another tickflow process ({holder or 'unknown'}; "
                    f"lock {self.path}); refusing to start a second daemon on it"
                ) from None
            raise StorageError(f"{self.db}: cannot lock {self.path}: {exc}") from exc
        try:
            os.ftruncate(fd, 0)
            os.write(fd, _holder_line().encode("utf-8", "replace"))
        except OSError:
            pass  # the lock is what matters; the holder line is only for the message
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock


def _holder_line() -> str:
    argv = " ".join(sys.argv)[:200]
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"pid {os.getpid()}, started {started}, command {argv!r}\n"


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, _HOLDER_MAX)
    except OSError:
        return ""
    # The file is ours, but anyone who can write the directory can write it: no raw controls.
    text = raw.decode("utf-8", "replace").strip()
    return "".join(ch if ch.isprintable() else "?" for ch in text)
