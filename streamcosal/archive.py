"""Resumable batch processing of video archives: one unit per video, a manifest of finished units.

A *unit* is one video processed by the pipeline (:func:`streamcosal.pipeline.run_pipeline`) with
one model and one set of parameters. It is keyed by ``(video content hash, model identity,
parameters)``; the key names everything the unit writes, so a rerun knows what is done::

    out/frames/source_key=<k>/arc-<key>.<seq>.parquet   its rows (run id ``arc-<key>``)
    out/events/source_key=<k>/events-<uuid>.parquet      its events (run_id column ``arc-<key>``)
    out/overlays/arc-<key>/<k>.mp4                       its overlay video (with ``overlay``)
    out/runs/arc-<key>.json                              the pipeline's run report
    out/archive/stores/<key>.npz                         its consensus store
    out/archive/consensus.npz                            every committed video's consensus, merged by
                                                         :func:`rebuild_archive_store` (``streamcosal search``)
    out/archive/manifest/<key>.json                      its manifest record: done, partial or failed

A unit is *committed* when its manifest record says ``done`` or ``partial`` (the video was
damaged: the decodable part was processed, the warnings say what was lost); the record is written
(atomically) only after the pipeline has finished and closed every file. Files of a run id
``arc-<key>`` without a committed record belong to an attempt that was killed or failed:
:func:`discard_uncommitted` deletes them when an archive run starts (and :func:`run_unit` before
each attempt), and :func:`read_committed` ignores them meanwhile. Because the run id is the key
(not a fresh random id) and each attempt starts from nothing, a killed run resumed leaves exactly
the rows an uninterrupted run leaves: no duplicates, no partial files.

A video that fails is recorded as ``failed`` with its error (its attempt's files are deleted);
it is tried again on the next run. Failures the pipeline reports for a source (cannot be opened,
not a video, no frames) are permanent (:class:`UnitFailed` with ``transient=False``: retrying
cannot help); out of memory, a full disk or a lost GPU, raised or met inside a group
(``SourceRun.transient``), are worth retrying.

One archive run at a time per ``out`` (:func:`archive_lock`): the start-up clean-up would
otherwise delete the files of another run's unit in progress. ``streamcosal video`` runs (other
run ids) may write to the same ``out`` meanwhile.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from .params import EngineSpec, RunParams, hash_file
from .pipeline import PipelineConfig, group_name, run_pipeline
from .pipeline import is_transient as pipeline_transient
from .storage import read_results
from .storage.events import EVENTS_DIR
from .storage.files import atomic_write
from .storage.parquet_files import PARTITION_KEY
from .storage.results import FRAMES_DIR

ARCHIVE_DIR = "archive"
RUN_PREFIX = "arc-"
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".ts", ".mts", ".mpg", ".mpeg", ".flv",
                  ".wmv", ".3gp"}
Status = Literal["done", "partial", "failed"]
COMMITTED: tuple[str, ...] = ("done", "partial")


class UnitFailed(RuntimeError):
    """A unit failed; ``transient`` says whether trying again may help."""

    def __init__(self, video: str, error: str, transient: bool = False):
        self.video, self.error, self.transient = video, error, transient
        super().__init__(f"{video}: {error}")

    def __reduce__(self) -> tuple:  # picklable (Ray sends task exceptions between processes)
        return (type(self), (self.video, self.error, self.transient))


class ArchiveBusy(RuntimeError):
    """Another archive run holds the lock of this results folder."""


class ArchiveFailed(RuntimeError):
    """Some videos of an archive run failed; the others were processed. ``summary`` says which."""

    def __init__(self, summary: "ArchiveSummary"):
        self.summary = summary
        failed = summary.failed
        lines = "\n".join(f"  {r.video}: {r.error}" for r in failed)
        super().__init__(f"{len(failed)} of {len(summary.records)} video(s) failed:\n{lines}")

    def __reduce__(self) -> tuple:
        return (type(self), (self.summary,))


# -- units --------------------------------------------------------------------------------------


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

    @property
    def committed(self) -> bool:
        return self.status in COMMITTED


def list_videos(spec: str | Path | Sequence[str | Path]) -> list[str]:
    """Videos of a folder (recursively, by suffix, sorted), a glob pattern, a file, or a list of those.

    A path that does not exist is kept (its unit fails with a clear error); a pattern or folder
    that matches nothing is an error.
    """
    if not isinstance(spec, (str, Path)):
        return [v for item in spec for v in list_videos(item)]
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        found = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
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


# -- the manifest -------------------------------------------------------------------------------


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


# -- files of uncommitted attempts --------------------------------------------------------------


def run_files(out: str | Path, run_id: str) -> list[Path]:
    """Every file and folder a pipeline run ``run_id`` left in ``out`` (hidden temporaries included)."""
    out = Path(out)
    paths = [p for pattern in (f"{run_id}.*.parquet", f".{run_id}.*.tmp")
             for p in (out / FRAMES_DIR).glob(f"{PARTITION_KEY}=*/{pattern}")]
    paths += [p for p in (out / "overlays" / run_id, out / "runs" / f"{run_id}.json") if p.exists()]
    for path in (out / EVENTS_DIR).glob(f"{PARTITION_KEY}=*/*.parquet"):
        if not path.name.startswith(".") and run_id in _event_run_ids(path):
            paths.append(path)
    return sorted(paths)


def _event_run_ids(path: Path) -> set[str]:
    try:
        return set(pq.read_table(path, columns=["run_id"])["run_id"].to_pylist())
    except (pa.ArrowException, OSError, KeyError):
        return set()


def archive_run_ids(out: str | Path) -> set[str]:
    """The archive run ids (``arc-...``) that have files in ``out``."""
    out = Path(out)
    ids = {p.name.split(".")[0] for p in (out / FRAMES_DIR).glob(f"{PARTITION_KEY}=*/{RUN_PREFIX}*.parquet")}
    ids |= {p.name[1:].split(".")[0] for p in (out / FRAMES_DIR).glob(f"{PARTITION_KEY}=*/.{RUN_PREFIX}*.tmp")}
    ids |= {p.name for p in (out / "overlays").glob(f"{RUN_PREFIX}*")}
    ids |= {p.stem for p in (out / "runs").glob(f"{RUN_PREFIX}*.json")}
    for path in (out / EVENTS_DIR).glob(f"{PARTITION_KEY}=*/*.parquet"):
        if not path.name.startswith("."):
            ids |= {r for r in _event_run_ids(path) if r.startswith(RUN_PREFIX)}
    return ids


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
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}, f)
        yield path
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- running a unit -----------------------------------------------------------------------------


def run_unit(unit: Unit, out: str | Path, engine: Any, config: PipelineConfig | None = None) -> UnitRecord:
    """Process one unit into ``out`` unless the manifest says it is done; commit it when it completes.

    Returns the record (``skipped`` when it was already done).

    Raises:
        UnitFailed: the video failed (recorded in the manifest with its error; its files deleted).
        Exception: anything else the pipeline raised (recorded as failed too, then re-raised).
    """
    out = Path(out)
    manifest = Manifest(out)
    previous = manifest.get(unit.key)
    if previous is not None and previous.committed:
        return dataclasses.replace(previous, skipped=True)
    attempts = (previous.attempts if previous else 0) + 1
    record = UnitRecord(unit.key, unit.video, unit.content_hash, unit.model, unit.params, "failed", unit.run_id,
                        attempts=attempts)
    if unit.error is not None:
        _fail(manifest, record, unit.error)
        raise UnitFailed(unit.video, unit.error, transient=False)
    discard_run(out, unit.run_id)  # an earlier attempt that was killed or failed
    config = (config or PipelineConfig()).model_copy(update=dict(
        run_id=unit.run_id, show_progress=False, store_path=out / ARCHIVE_DIR / "stores" / f"{unit.key}.npz"))
    start = time.perf_counter()
    try:
        report = run_pipeline([unit.video], out, engine, config, group=group_name(unit.video))
    except BaseException as error:
        discard_run(out, unit.run_id)
        if isinstance(error, Exception):
            _fail(manifest, record, f"{type(error).__name__}: {error}")
        raise
    record.seconds = time.perf_counter() - start
    source = report.sources[0]
    record.warnings = list(source.warnings)
    if report.interrupted:
        discard_run(out, unit.run_id)
        raise UnitFailed(unit.video, f"stopped by {report.interrupted}; its files were deleted", transient=True)
    if source.status not in COMMITTED:
        discard_run(out, unit.run_id)
        error = source.error or f"the pipeline ended with status {source.status!r}"
        _fail(manifest, record, error)
        raise UnitFailed(unit.video, error, transient=source.transient)
    record.status, record.frames, record.error = source.status, source.frames, None
    record.overlay, record.finished = source.overlay, _now()
    manifest.write(record)  # the commit: from here on the unit is done
    return record


def _fail(manifest: Manifest, record: UnitRecord, error: str) -> None:
    record.status, record.error, record.finished = "failed", error, _now()
    manifest.write(record)


def is_transient(error: BaseException) -> bool:
    """Whether trying a failed unit again may help (for a scheduler's retry condition)."""
    if isinstance(error, UnitFailed):
        return error.transient
    return pipeline_transient(error)


# -- the archive's consensus store ------------------------------------------------------------------


def rebuild_archive_store(out: str | Path) -> Path | None:
    """Merge the consensus stores of the committed units into ``out/archive/consensus.npz``, one group
    per video (named by its path), so ``streamcosal search QUERY --store out/archive/consensus.npz``
    finds the archived videos that share a query's common object.

    Rebuilt from scratch each time (never double-counted); returns None when no unit has a store.
    """
    from .storage import ConsensusStore

    out = Path(out)
    merged = ConsensusStore(out / ARCHIVE_DIR / "consensus.npz")
    for record in Manifest(out).records():
        path = out / ARCHIVE_DIR / "stores" / f"{record.key}.npz"
        if not record.committed or not path.exists():
            continue
        store = ConsensusStore.open(path)
        for group in store.groups():
            state = store.state(group)
            merged.put(record.video, state.sums, state.n, state.t)
    if not len(merged):
        return None
    merged.save()
    return merged.path


# -- summaries ----------------------------------------------------------------------------------


@dataclass
class ArchiveSummary:
    """What an archive run did, unit by unit, in plan order; ``duplicates``: video -> the video it repeats."""

    out: str
    records: list[UnitRecord]
    duplicates: dict[str, str] = field(default_factory=dict)
    discarded: list[str] = field(default_factory=list)  # run ids of uncommitted attempts deleted at the start

    @property
    def failed(self) -> list[UnitRecord]:
        return [r for r in self.records if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def counts(self) -> dict[str, int]:
        return {
            "processed": sum(r.committed and not r.skipped for r in self.records),
            "skipped": sum(r.skipped for r in self.records),
            "partial": sum(r.status == "partial" for r in self.records),
            "failed": len(self.failed),
            "duplicates": len(self.duplicates),
        }

    def markdown(self) -> str:
        c = self.counts()
        lines = [
            f"# cosal-archive: {len(self.records)} video(s) in `{self.out}`", "",
            f"**{c['failed']} failed**, {c['processed']} processed, {c['skipped']} already done (skipped), "
            f"{c['partial']} partial (damaged video: the decodable part was processed), "
            f"{c['duplicates']} duplicate(s) not run twice.", "",
            "| video | status | frames | seconds | attempts | run id | error / warnings |",
            "|---|---|---:|---:|---:|---|---|",
        ]
        order = {"failed": 0, "partial": 1, "done": 2}
        for r in sorted(self.records, key=lambda r: order[r.status]):
            status = "done (skipped)" if r.skipped else r.status
            note = r.error or "; ".join(r.warnings[:2])
            note = note.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{r.video}` | {status} | {r.frames} | {r.seconds:.1f} | {r.attempts} | "
                         f"`{r.run_id}` | {note} |")
        for video, first in self.duplicates.items():
            lines.append(f"| `{video}` | duplicate of `{first}` | | | | | same bytes: not run twice |")
        if self.discarded:
            lines += ["", f"Deleted the files of {len(self.discarded)} unfinished attempt(s) of an earlier run: "
                      + ", ".join(f"`{r}`" for r in self.discarded)]
        lines += ["", f"Rows: `streamcosal.archive.read_committed('{self.out}')`, or any Parquet reader on "
                  f"`{self.out}/frames`."]
        return "\n".join(lines) + "\n"


def summarize(out: str | Path, units: Sequence[Unit], duplicates: dict[str, str] | None = None,
              skipped: Sequence[str] = (), discarded: Sequence[str] = ()) -> ArchiveSummary:
    """The summary of a run over ``units`` from the manifest; ``skipped``: keys found done at the start."""
    manifest = Manifest(out)
    records = []
    for unit in units:
        record = manifest.get(unit.key)
        if record is None:  # never reached (e.g. the run was cancelled)
            record = UnitRecord(unit.key, unit.video, unit.content_hash, unit.model, unit.params, "failed",
                                unit.run_id, error="not processed: the run ended before this video")
        record.skipped = unit.key in set(skipped)
        records.append(record)
    return ArchiveSummary(str(out), records, dict(duplicates or {}), list(discarded))


def done_keys(out: str | Path, units: Sequence[Unit]) -> list[str]:
    """Keys of ``units`` already committed in the manifest of ``out``."""
    manifest = Manifest(out)
    return [u.key for u in units if (r := manifest.get(u.key)) is not None and r.committed]


@dataclass
class ArchivePlan:
    """The units of an archive run, what was already done, and what the start-up clean-up deleted."""

    out: str
    units: list[Unit]
    duplicates: dict[str, str]
    done: list[str]
    discarded: list[str]

    @property
    def todo(self) -> list[Unit]:
        done = set(self.done)
        return [u for u in self.units if u.key not in done]


def prepare(videos: str | Sequence[str], out: str | Path, model: str, params: dict[str, Any]) -> ArchivePlan:
    """List and hash the videos, delete files of unfinished attempts, find what is done.

    Call while holding :func:`archive_lock`.
    """
    units, duplicates = plan_units(list_videos(videos), model, params)
    discarded = sorted(discard_uncommitted(out))
    return ArchivePlan(str(out), units, duplicates, done_keys(out, units), discarded)


def run_archive(videos: str | Sequence[str], out: str | Path, engine: EngineSpec | None = None,
                params: RunParams | None = None) -> ArchiveSummary:
    """Process an archive sequentially, without a scheduler (the ``cosal-archive`` flow runs units
    concurrently on a task runner); units are keyed as the flow keys them (:meth:`EngineSpec.identity`,
    :meth:`RunParams.result_params`), so either can resume the other's ``out``. Raises
    :class:`ArchiveFailed` after the others finished."""
    from .jobs import pipeline_config

    engine, params = engine or EngineSpec(), params or RunParams()
    with archive_lock(out):
        plan = prepare(videos, out, engine.identity(), params.result_params())
        for unit in plan.todo:
            try:
                run_unit(unit, out, engine.build(), pipeline_config(params))
            except Exception:  # recorded in the manifest by run_unit; the others go on
                pass
        rebuild_archive_store(out)
    summary = summarize(out, plan.units, plan.duplicates, plan.done, plan.discarded)
    if not summary.ok:
        raise ArchiveFailed(summary)
    return summary
