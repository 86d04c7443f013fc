"""One writer per output folder: an advisory lock (flock) on a lock file.

- `FolderLock(folder)` locks `<folder>/.headcap.lock`, for a folder that exists for the whole run
  (a pipeline's run folder). The file stays.
- `OutputLock(out)` locks `<parent>/.<name>.lock` beside an output that does not exist yet or is
  replaced by a rename (`synth --out DIR`, `ingest --out DIR`: DIR.partial is built, then renamed to
  DIR). The lock file is removed when the lock is released.

The kernel releases a flock when its holder dies, however it dies (kill -9 included), so a lock
left by a killed run never blocks the next one. The holder writes "<what> pid <pid> on <host>"
into the file: a second writer is refused with a message naming the holder, and a run that takes
over a lock file whose writer died says so (`stale_holder`).

A lock file may be unlinked by its holder while another process waits to open it; `acquire`
checks after locking that the path still names the inode it locked, and retries otherwise, so two
processes can never both hold "the" lock of one output.
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path

LOCK_NAME = ".headcap.lock"


class FolderLockedError(RuntimeError):
    """Another live process writes to the same output folder."""


class _FileLock:
    def __init__(self, path: Path, folder: Path, what: str, remove: bool):
        self.path = Path(path)
        self.folder = Path(folder)
        self.what = what
        self.remove = remove
        self.stale_holder: str | None = None
        """The holder line a dead writer left in the lock file (None: the lock was clean)."""
        self._fd: int | None = None

    def acquire(self) -> "_FileLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise FolderLockedError(
                        f"{self.folder}: another {holder or 'headcap process'} is writing to this folder "
                        f"(lock {self.path}); wait for it to finish or choose another output folder") from None
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file between our open and our lock
                os.close(fd)
                continue
            self.stale_holder = _read_holder(fd) or None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{self.what} pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
            self._fd = fd
            return self
        raise FolderLockedError(f"{self.folder}: could not take the lock {self.path} (it keeps being replaced)")

    def release(self) -> None:
        if self._fd is not None:
            if self.remove:
                try:
                    os.unlink(self.path)  # while still locked: a waiter re-checks the inode
                except FileNotFoundError:
                    pass
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class FolderLock(_FileLock):
    """The lock of an existing run folder: `<folder>/.headcap.lock` (kept)."""

    def __init__(self, folder: Path, what: str = "headcap"):
        folder = Path(folder)
        super().__init__(folder / LOCK_NAME, folder, what, remove=False)


class OutputLock(_FileLock):
    """The lock of an output folder built beside itself and renamed into place:
    `<parent>/.<name>.lock`, removed on release."""

    def __init__(self, out: Path, what: str = "headcap"):
        out = Path(os.path.abspath(out))
        super().__init__(lock_path_for(out), out, what, remove=True)


def lock_path_for(out: Path) -> Path:
    """Where OutputLock(out) keeps its lock file."""
    out = Path(os.path.abspath(out))
    return out.with_name(f".{out.name}.lock")


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
