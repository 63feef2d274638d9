"""Where a run's files lie under a results folder: one spelling for the pipeline, which writes
them, and the archive, which finds and deletes them.

    out/frames/source_key=<k>/<run_id>.<seq>.parquet            its rows (``storage.ResultWriter``)
    out/events/source_key=<k>/<run_id>.events-<hex>.parquet     its events (``storage.write_events``)
    out/overlays/<run_id>/                                      its overlays
    out/runs/<run_id>.json                                      its report

Every file of a run carries its run id in its name (hidden temporaries ``.<name>.<hex>.tmp`` too),
so finding a run's files reads no file.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .events import EVENTS_DIR
from .parquet_files import PARTITION_KEY
from .results import FRAMES_DIR

OVERLAYS_DIR = "overlays"
REPORTS_DIR = "runs"


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

    def files(self) -> list[Path]:
        """Every file and folder the run left in ``out`` (hidden temporaries included), sorted."""
        paths = [p for table in (FRAMES_DIR, EVENTS_DIR)
                 for pattern in (f"{self.run_id}.*.parquet", f".{self.run_id}.*.tmp")
                 for p in (self.out / table).glob(f"{PARTITION_KEY}=*/{pattern}")]
        paths += [p for p in (self.overlays, self.report) if p.exists()]
        return sorted(paths)

    @staticmethod
    def run_ids(out: Path, prefix: str = "") -> set[str]:
        """The run ids starting with ``prefix`` that have files in ``out`` (from the file names alone)."""
        names = [p.name for table in (FRAMES_DIR, EVENTS_DIR)
                 for p in (out / table).glob(f"{PARTITION_KEY}=*/{prefix}*.parquet")]
        names += [p.name[1:] for table in (FRAMES_DIR, EVENTS_DIR)
                  for p in (out / table).glob(f"{PARTITION_KEY}=*/.{prefix}*.tmp")]
        ids = {name.split(".")[0] for name in names}
        ids |= {p.name for p in (out / OVERLAYS_DIR).glob(f"{prefix}*")}
        ids |= {p.stem for p in (out / REPORTS_DIR).glob(f"{prefix}*.json")}
        return ids


def new_run_id(prefix: str = "", now: datetime | None = None) -> str:
    """``<prefix><UTC time>-<6 random hex digits>``, e.g. ``20261204T130726Z-3f9a1c``: the name of a run's
    files; two runs started in the same second differ."""
    now = now or datetime.now(UTC)
    return prefix + now.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
