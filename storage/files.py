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
