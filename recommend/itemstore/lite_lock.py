"""One process per Milvus Lite file, enforced with an exclusive lock beside the file.

milvus-lite 2.5.1 locks ``.<name>.lock`` itself, but when a second process fails to take
that lock its clean-up deletes the lock file the first still holds, and the next attempt
starts a second Lite server on the same file (two processes then answer from diverging
data). Our lock is a separate file (``.<name>.owner``) held with flock until the process
exits, as the Lite server pymilvus starts for a file lives that long too (pymilvus never
stops it); several stores of one process share the hold.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import sys
import threading
from pathlib import Path

from itemstore.errors import LiteFileBusy

_held: dict[str, int] = {}  # lock path -> its open descriptor, kept until the process exits
_guard = threading.Lock()


def lock_path(db: str | Path) -> Path:
    db = Path(db).resolve()
    return db.with_name(f".{db.name}.owner")


def acquire(db: str | Path) -> None:
    """Take the file for this process, or raise LiteFileBusy naming the holder."""
    path = lock_path(db)
    key = str(path)
    with _guard:
        if key in _held:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LiteFileBusy(_busy_message(Path(db).resolve(), holder)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {_worker_of()} {' '.join(sys.argv)[:200]}\n".encode())
        _held[key] = fd


def _worker_of() -> int:
    """The parent's pid for a worker process its parent spawned (uvicorn --workers), else 0."""
    return os.getppid() if multiprocessing.parent_process() is not None else 0


def _read_holder(fd: int) -> tuple[int, int, str] | None:
    try:
        pid, ppid, cmd = (os.pread(fd, 512, 0).decode(errors="replace").strip().split(" ", 2)
                          + [""])[:3]
        return int(pid), int(ppid), cmd
    except (OSError, ValueError):
        return None


def _busy_message(db: Path, holder: tuple[int, int, str] | None) -> str:
    who = "another process"
    if holder is not None:
        pid, worker_of, cmd = holder
        sibling = worker_of != 0 and worker_of == _worker_of()
        who = (f"another worker of this server (process {pid}): uvicorn --workers > 1"
               if sibling else f"process {pid} ({cmd})" if cmd else f"process {pid}")
    return (f"Milvus Lite file {db} is already open by {who}; Milvus Lite serves one process "
            f"per file. For several workers or replicas use a Milvus server "
            f"(milvus/start_server.sh, then MILVUS_URI=http://127.0.0.1:19530), or give this "
            f"process a file of its own (MILVUS_URI=/path/other.db)")
