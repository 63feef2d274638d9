"""Units: one video with one model and one set of parameters, keyed by what its results depend on;
their manifest records."""

from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Sequence

from streamcosal.io.file import VIDEO_SUFFIXES
from streamcosal.params import hash_file

ARCHIVE_DIR = "archive"
RUN_PREFIX = "arc-"
Status = Literal["done", "partial", "failed"]
COMMITTED: tuple[str, ...] = ("done", "partial")


@dataclass(frozen=True)
class Unit:
    """One video to process with one model and one set of parameters.

    ``error`` is set when the video cannot even be hashed (missing, unreadable): the unit fails.
    """

    video: str
    content_hash: str | None
    model: str
    params: dict[str, Any]
    error: str | None = None

    @property
    def key(self) -> str:
        """16 hex digits of sha256 over (content hash, model, parameters); a missing file's key uses its path."""
        content = self.content_hash or f"unreadable:{self.video}"
        blob = json.dumps([content, self.model, self.params], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def run_id(self) -> str:
        return RUN_PREFIX + self.key


@dataclass
class UnitRecord:
    """A manifest entry: what happened to a unit (``skipped``: found done, not run this time)."""

    key: str
    video: str
    content_hash: str | None
    model: str
    params: dict[str, Any]
    status: Status
    run_id: str
    frames: int = 0
    seconds: float = 0.0
    attempts: int = 0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    overlay: str | None = None
    finished: str = ""
    skipped: bool = False
    precision: str | None = None  # what the unit ran at (fp32, bf16...): not part of its key, see docs

    @property
    def committed(self) -> bool:
        return self.status in COMMITTED


def list_videos(spec: str | Path | Sequence[str | Path]) -> list[str]:
    """Videos of a folder (recursively, by suffix, sorted; hidden files and folders left out: a copy's
    ``._clip.mp4`` from macOS, ``.Trashes``), a glob pattern, a file, or a list of those.

    A path that does not exist is kept (its unit fails with a clear error); a pattern or folder
    that matches nothing is an error.
    """
    if not isinstance(spec, (str, Path)):
        return [v for item in spec for v in list_videos(item)]
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        found = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not found:
            raise FileNotFoundError(f"no video files ({', '.join(sorted(VIDEO_SUFFIXES))}) in folder {path}")
        return found
    if glob.has_magic(text):
        found = sorted(p for p in glob.glob(os.path.expanduser(text), recursive=True) if Path(p).is_file())
        if not found:
            raise FileNotFoundError(f"no file matches {text!r}")
        return found
    return [str(path)]


def plan_units(videos: Sequence[str], model: str, params: dict[str, Any]) -> tuple[list[Unit], dict[str, str]]:
    """One unit per distinct video content, in order; and the duplicates (video -> the video it repeats).

    A video whose bytes are identical to an earlier one's gives the same results, so it is not
    run twice.
    """
    units: list[Unit] = []
    by_key: dict[str, str] = {}
    duplicates: dict[str, str] = {}
    for video in videos:
        try:
            unit = Unit(str(video), hash_file(video), model, dict(params))
        except OSError as e:
            unit = Unit(str(video), None, model, dict(params),
                        error=f"cannot read the video file: {e.strerror or e} (check the path and permissions)")
        if unit.key in by_key:
            duplicates[unit.video] = by_key[unit.key]
            continue
        by_key[unit.key] = unit.video
        units.append(unit)
    return units, duplicates


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
