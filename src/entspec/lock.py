"""One writer per experiment folder: an exclusive lock on ``OUTPUT_DIR/.lock`` holding the writer's PID.

The lock is ``fcntl.flock`` on the file, so the kernel releases it when its process dies in any way
(SIGKILL included): a lock file left behind by a dead run is stale and simply taken over.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType

LOCK_FILE = ".lock"


class FolderLockedError(OSError):
    """Another live process holds the experiment folder; the message names its PID."""


class FolderLock:
    """``with FolderLock(output_dir): ...`` runs the block as the folder's only writer."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise FolderLockedError(f"{self.path.parent}: in use by another entspec run ({holder}); wait for it "
                                    "to finish or stop it (a lock left by a dead process is taken over)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FolderLock":
        self.acquire()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def lock_holder(folder: str | Path) -> str | None:
    """Who holds ``folder``'s lock now ("pid N on HOST"), or None when no live process does (read-only peek)."""
    path = Path(folder) / LOCK_FILE
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(fd, 200).decode("utf-8", "replace").strip() or "unknown"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
