"""The files of a unit's attempts in ``out`` (found by their run id, ``storage.layout.RunLayout``):
deleting those of attempts that were killed or failed, reading only committed rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from streamcosal.run.archive.manifest import Manifest
from streamcosal.run.archive.units import ARCHIVE_DIR, RUN_PREFIX
from streamcosal.storage import read_results
from streamcosal.storage.events import EVENTS_DIR
from streamcosal.storage.layout import RunLayout
from streamcosal.storage.parquet_files import PARTITION_KEY


def run_files(out: str | Path, run_id: str) -> list[Path]:
    """Every file and folder a pipeline run ``run_id`` left in ``out`` (hidden temporaries included),
    found by name; plus event files written before event files carried their run id in their name."""
    out = Path(out)
    return sorted(RunLayout(out, run_id).files() + [p for p in _legacy_event_files(out) if run_id in _event_run_ids(p)])


def archive_run_ids(out: str | Path) -> set[str]:
    """The archive run ids (``arc-...``) that have files in ``out``."""
    out = Path(out)
    legacy = {r for p in _legacy_event_files(out) for r in _event_run_ids(p) if r.startswith(RUN_PREFIX)}
    return RunLayout.run_ids(out, RUN_PREFIX) | legacy


def _legacy_event_files(out: Path) -> list[Path]:
    """Event files named ``events-<hex>.parquet`` (before ``<run_id>.events-<hex>.parquet``): the
    run ids are read from them."""
    return sorted((out / EVENTS_DIR).glob(f"{PARTITION_KEY}=*/events-*.parquet"))


def _event_run_ids(path: Path) -> set[str]:
    try:
        return set(pq.read_table(path, columns=["run_id"])["run_id"].to_pylist())
    except (pa.ArrowException, OSError, KeyError):
        return set()


def discard_run(out: str | Path, run_id: str) -> list[Path]:
    """Delete every file of run ``run_id`` in ``out`` (and its consensus store); returns what was deleted."""
    deleted = run_files(out, run_id)
    for path in deleted:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if run_id.startswith(RUN_PREFIX):
        store = Path(out) / ARCHIVE_DIR / "stores" / f"{run_id[len(RUN_PREFIX):]}.npz"
        if store.exists():
            store.unlink()
            deleted.append(store)
    return deleted


def discard_uncommitted(out: str | Path) -> dict[str, list[Path]]:
    """Delete the files of every archive run id without a committed manifest record (attempts that
    were killed or failed). Call it only while holding :func:`archive_lock`. Returns run id -> files."""
    committed = Manifest(out).committed_run_ids()
    return {run_id: discard_run(out, run_id) for run_id in sorted(archive_run_ids(out) - committed)}


def read_committed(out: str | Path) -> pa.Table:
    """``read_results(out)`` without the rows of uncommitted archive attempts (other runs' rows, e.g.
    ``streamcosal video``, are all kept)."""
    table = read_results(Path(out))
    if table.num_rows == 0:
        return table
    committed = pa.array(sorted(Manifest(out).committed_run_ids()), type=pa.string())
    run_ids = table["run_id"]
    keep = pc.or_(pc.invert(pc.starts_with(run_ids, RUN_PREFIX)), pc.is_in(run_ids, value_set=committed))
    return table.filter(keep)
