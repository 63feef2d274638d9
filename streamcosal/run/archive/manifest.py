"""The manifest of ``out``: one JSON record per unit (done, partial or failed), each replaced atomically."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import pyarrow as pa

from streamcosal.run.archive.units import ARCHIVE_DIR, Unit, UnitRecord
from streamcosal.storage.files import atomic_write


class Manifest:
    """The manifest of ``out``: one JSON record per unit, each replaced atomically. Thread- and
    process-safe for distinct units (one file each)."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.directory = self.out / ARCHIVE_DIR / "manifest"

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> UnitRecord | None:
        try:
            data = json.loads(self.path(key).read_text())
        except FileNotFoundError:
            return None
        return UnitRecord(**{k: v for k, v in data.items() if k in _RECORD_FIELDS})

    def records(self) -> list[UnitRecord]:
        if not self.directory.is_dir():
            return []
        keys = sorted(p.stem for p in self.directory.glob("*.json") if not p.name.startswith("."))
        return [r for r in (self.get(k) for k in keys) if r is not None]

    def committed_run_ids(self) -> set[str]:
        return {r.run_id for r in self.records() if r.committed}

    def write(self, record: UnitRecord) -> None:
        """Write (or replace) a unit's record atomically."""
        data = dataclasses.asdict(record)
        data.pop("skipped")
        with atomic_write(self.path(record.key), "w") as f:
            json.dump(data, f, indent=2, default=str)

    def table(self) -> pa.Table:
        """The records as a table (for reports, DuckDB, pandas)."""
        rows = [dataclasses.asdict(r) for r in self.records()]
        for row in rows:
            row.pop("skipped")
            row["params"] = json.dumps(row["params"], sort_keys=True)
            row["warnings"] = list(row["warnings"])
        return pa.Table.from_pylist(rows)


_RECORD_FIELDS = {f.name for f in dataclasses.fields(UnitRecord)}


def done_keys(out: str | Path, units: Sequence[Unit]) -> list[str]:
    """Keys of ``units`` already committed in the manifest of ``out``."""
    manifest = Manifest(out)
    return [u.key for u in units if (r := manifest.get(u.key)) is not None and r.committed]
