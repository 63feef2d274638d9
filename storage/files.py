"""Atomic file writes: a reader (or a crash) never sees a half-written file.

    with atomic_write(out / "runs" / "r1.json", "w") as f:
        json.dump(report, f)

The data goes to a hidden temporary file beside the target (same folder, so the same file system),
is flushed and fsynced, then ``os.replace``d over the target in one step. On any exception,
KeyboardInterrupt included, the temporary file is deleted and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open ``path`` for writing (``"wb"`` or ``"w"``) so that it appears whole or not at all.

    The folder is created; an existing file is replaced. The permissions are a new file's (the
    umask applies).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write writes a whole file: mode 'wb' or 'w', got {mode!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, "xb" if mode == "wb" else "x") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def temporary_path(path: Path, suffix: str = ".tmp") -> Path:
    """A hidden, unique name beside ``path`` for a file being written (``.<name>.<12 hex digits><suffix>``),
    renamed over ``path`` once whole; a killed writer's leftovers are found by :data:`TEMPORARY_GLOB`."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{suffix}")


TEMPORARY_GLOB = ".*.tmp*"
"""What every :func:`temporary_path` name matches."""


def check_store_path(store: Path, option: str = "--store") -> None:
    """Check that a run can read and update the consensus store file ``store``
    (:class:`~streamcosal.storage.ConsensusStore`), before any work: the file, where it exists, readable
    and writable, and its folder writable (it is saved by :func:`atomic_write`, with a lock file beside
    it), or creatable; without creating anything.

    Raises:
        ValueError: naming the store and what to do.
    """
    if store.is_dir():
        raise ValueError(f"{option} {store} is a folder: give the store's file, e.g. {store / 'consensus.npz'}")
    existing = store.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{option} {store} cannot be saved: {existing} is a file, not a folder; give a store path "
                         "in a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {store} cannot be saved: its folder {existing} is read-only or not yours (the store "
                         "is written through a temporary file and a lock file beside it); give a --store in a folder "
                         "you can write to")
    if store.exists() and not os.access(store, os.R_OK):
        raise ValueError(f"{option} {store} cannot be read (no permission): give a store you can read and write, "
                         "or another path for a new one")
    if store.exists() and not os.access(store, os.W_OK):
        raise ValueError(f"{option} {store} is read-only, and a run updates it: make it writable "
                         f"(chmod u+w {store}) or give another --store")
