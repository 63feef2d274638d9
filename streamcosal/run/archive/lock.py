"""One archive run per ``out`` at a time."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock, Timeout

from streamcosal.run.archive.units import ARCHIVE_DIR, now
from streamcosal.storage.files import atomic_write


class ArchiveBusy(RuntimeError):
    """Another archive run holds the lock of this results folder."""


@contextlib.contextmanager
def archive_lock(out: str | Path) -> Iterator[Path]:
    """Hold ``out/archive/lock`` while an archive run works on ``out``; another run holding it
    raises :class:`ArchiveBusy` naming it (pid, host, since: ``out/archive/lock.json``).

    The lock is an OS lock on the file (``filelock``: ``flock``), which the OS drops when its
    holder dies, however it dies: no stale lock to clean up. What it gives up on network file
    systems: whether a lock taken on one host is seen on another depends on the server and the
    mount (Linux emulates ``flock`` on NFS with byte-range locks, which NFSv4 servers share; SMB
    mounts and some NAS do not), so run the archive runs of one ``out`` from one host there.
    """
    path = Path(out) / ARCHIVE_DIR / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = path.with_name("lock.json")
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        who = _read_holder(holder)
        raise ArchiveBusy(f"another archive run (pid {who.get('pid')} on {who.get('host')}, since {who.get('since')}) "
                          f"is working on {out}; wait for it to finish") from None
    try:
        with atomic_write(holder, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": now()}, f)
        yield path
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
