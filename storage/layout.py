"""Where a run's files lie under a results folder: one spelling for the pipeline, which writes
them, and the archive, which finds and deletes them.

    out/frames/source_key=<k>/<run_id>.<seq>.parquet            its rows (``storage.ResultWriter``)
    out/events/source_key=<k>/<run_id>.events-<hex>.parquet     its events (``storage.write_events``)
    out/overlays/<run_id>/                                      its overlays
    out/runs/<run_id>.json                                      its report
    out/runs/<run_id>.lock                                      held while it runs

Every file of a run carries its run id in its name (hidden temporaries ``.<name>.<hex>.tmp`` and
rows not yet committed, ``.<run_id>.<seq>.parquet``, too), so finding a run's files reads no file.
A run whose lock is free and that left hidden files was killed: :func:`set_aside_unfinished` moves
its rows to ``out/unfinished/<run_id>/`` and deletes its temporaries.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from .events import EVENTS_DIR
from .files import TEMPORARY_GLOB
from .parquet_files import PARTITION_KEY
from .results import FRAMES_DIR

STORE_FILE = "consensus.npz"
"""The consensus store's file in a results folder, unless a run names another."""
OVERLAYS_DIR = "overlays"
REPORTS_DIR = "runs"
UNFINISHED_DIR = "unfinished"


@dataclass(frozen=True)
class RunLayout:
    """The paths of run ``run_id`` under ``out``."""

    out: Path
    run_id: str

    @property
    def overlays(self) -> Path:
        """The run's overlay folder (videos, PNGs and contact sheets)."""
        return self.out / OVERLAYS_DIR / self.run_id

    @property
    def report(self) -> Path:
        """The run's report (JSON)."""
        return self.out / REPORTS_DIR / f"{self.run_id}.json"

    @property
    def lock(self) -> Path:
        """The lock the run holds while it runs (a killed run's is free)."""
        return self.out / REPORTS_DIR / f"{self.run_id}.lock"

    def files(self) -> list[Path]:
        """Every file and folder the run left in ``out`` (hidden temporaries included), sorted."""
        paths = [p for table in (FRAMES_DIR, EVENTS_DIR)
                 for pattern in (f"{self.run_id}.*.parquet", f".{self.run_id}.*.tmp", f".{self.run_id}.*.parquet")
                 for p in (self.out / table).glob(f"{PARTITION_KEY}=*/{pattern}")]
        paths += [p for p in (self.overlays, self.report) if p.exists()]
        return sorted(paths)

    @staticmethod
    def run_ids(out: Path, prefix: str = "") -> set[str]:
        """The run ids starting with ``prefix`` that have files in ``out`` (from the file names alone)."""
        names = [p.name for table in (FRAMES_DIR, EVENTS_DIR)
                 for p in (out / table).glob(f"{PARTITION_KEY}=*/{prefix}*.parquet")]
        names += [p.name[1:] for table in (FRAMES_DIR, EVENTS_DIR) for hidden in ("tmp", "parquet")
                  for p in (out / table).glob(f"{PARTITION_KEY}=*/.{prefix}*.{hidden}")]
        ids = {name.split(".")[0] for name in names}
        ids |= {p.name for p in (out / OVERLAYS_DIR).glob(f"{prefix}*")}
        ids |= {p.stem for p in (out / REPORTS_DIR).glob(f"{prefix}*.json")}
        return ids


def new_run_id(prefix: str = "", now: datetime | None = None) -> str:
    """``<prefix><UTC time>-<6 random hex digits>``, e.g. ``20261204T130726Z-3f9a1c``: the name of a run's
    files; two runs started in the same second differ."""
    now = now or datetime.now(UTC)
    return prefix + now.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def is_running(out: Path, run_id: str) -> bool:
    """Whether run ``run_id`` is running now (its lock is held, by any process)."""
    lock = FileLock(RunLayout(out, run_id).lock)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def set_aside_unfinished(out: Path) -> dict[str, int]:
    """Rows that killed runs left uncommitted (hidden) under ``out`` moved to ``out/unfinished/<run_id>/``
    (readable there with ``read_files``; never part of the results), their temporary files deleted;
    runs still running are left alone. Returns each killed run's number of files set aside."""
    hidden = [p for table in (FRAMES_DIR, EVENTS_DIR) for p in (out / table).glob(f"{PARTITION_KEY}=*/.*")]
    hidden += [p for p in (out / OVERLAYS_DIR).glob(f"*/{TEMPORARY_GLOB}")]
    alive: dict[str, bool] = {}
    moved: dict[str, int] = {}
    for path in hidden:
        run_id = path.parent.name if path.parent.parent.name == OVERLAYS_DIR else path.name.lstrip(".").split(".")[0]
        if alive.setdefault(run_id, is_running(out, run_id)):
            continue
        if path.name.endswith(".parquet") and not path.name.startswith(".."):
            target = out / UNFINISHED_DIR / run_id / path.parent.parent.name / path.parent.name / path.name.lstrip(".")
            target.parent.mkdir(parents=True, exist_ok=True)
            path.replace(target)
            moved[run_id] = moved.get(run_id, 0) + 1
        else:
            path.unlink(missing_ok=True)
    return moved


def remove_other_runs(out: Path, source_key: str, run_id: str) -> int:
    """Delete the visible rows and events of source ``source_key`` that runs other than ``run_id``
    wrote (a re-run replaces them); the number of files deleted."""
    earlier = [p for table in (FRAMES_DIR, EVENTS_DIR)
               for p in (out / table / f"{PARTITION_KEY}={source_key}").glob("*.parquet")
               if not p.name.startswith((".", f"{run_id}."))]
    for path in earlier:
        path.unlink(missing_ok=True)
    return len(earlier)
