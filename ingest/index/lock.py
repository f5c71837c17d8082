"""The index folder's write lock: an ``flock`` on ``write.lock``, held by one process at a time.

Readers never take it (SQLite's WAL keeps their snapshot); a writer takes it for one transaction,
or for a whole build (``begin_build`` … ``end_build``). The kernel drops it when the process dies,
so a killed build never leaves the folder locked.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from ..errors import IndexBusy

LOCK_NAME = "write.lock"
LOCK_TIMEOUT_S = 60.0


class WriteLock:
    """The exclusive write lock of the index folder ``folder`` (re-entrant: taking it twice is a
    no-op)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: bool) -> None:
        """Take the lock, waiting up to :data:`LOCK_TIMEOUT_S` when ``wait``; else
        :class:`IndexBusy` at once."""
        if self._fd is not None:
            return
        fd = os.open(self.folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + (LOCK_TIMEOUT_S if wait else 0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise IndexBusy(self.folder, "another process is writing this index") from None
                time.sleep(0.05)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
