"""Running units: one at a time with :func:`run_unit` (a scheduler runs many), or a whole archive
with :func:`run_archive` (a few units at once on a GPU); the merged consensus store of the committed units."""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from streamcosal.inference.engine import engine_for
from streamcosal.params import EngineSpec, RunParams
from streamcosal.run.archive.files import discard_run, discard_uncommitted
from streamcosal.run.archive.lock import archive_lock
from streamcosal.run.archive.manifest import Manifest, done_keys
from streamcosal.run.archive.summary import ArchiveFailed, ArchiveSummary, summarize
from streamcosal.run.archive.units import ARCHIVE_DIR, COMMITTED, Unit, UnitRecord, list_videos, now, plan_units
from streamcosal.run.concurrent import each_in_threads, files_at_once
from streamcosal.run.groups import group_name
from streamcosal.run.interrupts import stop_signals
from streamcosal.run.jobs import pipeline_config
from streamcosal.run.observers import FrameRecord, StopRun
from streamcosal.run.pipeline import run_pipeline
from streamcosal.run.records import PipelineConfig
from streamcosal.run.records import is_transient as pipeline_transient
from streamcosal.storage import ConsensusStore


class UnitFailed(RuntimeError):
    """A unit failed; ``transient`` says whether trying again may help."""

    def __init__(self, video: str, error: str, transient: bool = False):
        self.video, self.error, self.transient = video, error, transient
        super().__init__(f"{video}: {error}")

    def __reduce__(self) -> tuple:  # picklable (Ray sends task exceptions between processes)
        return (type(self), (self.video, self.error, self.transient))


def run_unit(unit: Unit, out: str | Path, engine: Any, config: PipelineConfig | None = None,
             stop: threading.Event | None = None) -> UnitRecord:
    """Process one unit into ``out`` unless the manifest says it is done; commit it when it completes.

    Returns the record (``skipped`` when it was already done). ``stop``, once set, stops the unit at its
    next frame as Ctrl-C would (its files deleted, ``UnitFailed`` transient): for units running in
    threads, which get no signals.

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
        run_id=unit.run_id, show_progress=False, store_path=out / ARCHIVE_DIR / "stores" / f"{unit.key}.npz",
        metrics_port=None, live=False, keep_history=True))  # an archive's files are read whole, never live (no
    # live metrics: units running at once would share the port); its manifest says which units are current
    start = time.perf_counter()
    try:
        report = run_pipeline([unit.video], out, engine, config, group=group_name(unit.video),
                              on_frame=None if stop is None else functools.partial(_stop_if_set, stop))
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
    if report.errors:  # the last rows, the events or the store could not be written (a full disk)
        discard_run(out, unit.run_id)
        error = "; ".join(report.errors)
        _fail(manifest, record, error)
        raise UnitFailed(unit.video, error, transient=True)
    if source.status not in COMMITTED:
        discard_run(out, unit.run_id)
        error = source.error or f"the pipeline ended with status {source.status!r}"
        _fail(manifest, record, error)
        raise UnitFailed(unit.video, error, transient=source.transient)
    record.status, record.frames, record.error = source.status, source.frames, None
    record.overlay, record.finished, record.precision = source.overlay, now(), report.precision
    manifest.write(record)  # the commit: from here on the unit is done
    return record


def _stop_if_set(stop: threading.Event, _: FrameRecord) -> None:
    if stop.is_set():
        raise StopRun


def _fail(manifest: Manifest, record: UnitRecord, error: str) -> None:
    record.status, record.error, record.finished = "failed", error, now()
    manifest.write(record)


def is_transient(error: BaseException) -> bool:
    """Whether trying a failed unit again may help (for a scheduler's retry condition)."""
    if isinstance(error, UnitFailed):
        return error.transient
    return pipeline_transient(error)


def rebuild_archive_store(out: str | Path) -> Path | None:
    """Merge the consensus stores of the committed units into ``out/archive/consensus.npz``, one group
    per video (named by its path), so ``streamcosal search QUERY --store out/archive/consensus.npz``
    finds the archived videos that share a query's common object.

    Rebuilt from scratch each time (never double-counted, no group of a video no longer committed);
    a video processed by several units (other models or parameters) gets its latest unit's
    consensus. Returns None when no unit has a store.
    """
    out = Path(out)
    merged = ConsensusStore(out / ARCHIVE_DIR / "consensus.npz")
    for record in sorted(Manifest(out).records(), key=lambda r: r.finished):  # the latest put wins
        path = out / ARCHIVE_DIR / "stores" / f"{record.key}.npz"
        if not record.committed or not path.exists():
            continue
        store = ConsensusStore.open(path)
        for group in store.groups():
            state = store.state(group)
            merged.put(record.video, state.sums, state.n, state.t)
    if not len(merged):
        return None
    merged.save(replace=True)
    return merged.path


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
    """Process an archive without a scheduler (the ``cosal-archive`` flow runs units on a task runner):
    ``params.parallel_groups`` units at once (default one on a CPU, four on a GPU), in threads sharing one
    engine; units are keyed as the flow keys them (:meth:`EngineSpec.identity`, :meth:`RunParams.result_params`),
    so either can resume the other's ``out``. Ctrl-C or SIGTERM stops the units under way (their files
    deleted, as a killed unit's are) and is raised again. Raises :class:`ArchiveFailed` after the others
    finished."""
    engine, params = engine or EngineSpec(), params or RunParams()
    if not isinstance(engine, EngineSpec):  # units are keyed by the spec (a built engine cannot say what it is)
        raise TypeError(f"run_archive takes engine as an EngineSpec (EngineSpec(weights=..., device=...)), got "
                        f"{type(engine).__name__}")
    with archive_lock(out):
        plan = prepare(videos, out, engine.identity(), params.result_params())
        built, config = engine_for(engine), pipeline_config(params)
        workers = files_at_once(params.parallel_groups, built.device)
        if workers == 1:
            for unit in plan.todo:
                _run_recorded(unit, out, built, config)
        else:
            stop = threading.Event()
            with stop_signals():
                each_in_threads(plan.todo, lambda unit: _run_recorded(unit, out, built, config, stop), workers,
                                lambda unit: f"streamcosal-unit {Path(unit.video).name}", stop, stop.set)
        rebuild_archive_store(out)
    summary = summarize(out, plan.units, plan.duplicates, plan.done, plan.discarded)
    if not summary.ok:
        raise ArchiveFailed(summary)
    return summary


def _run_recorded(unit: Unit, out: str | Path, engine: Any, config: PipelineConfig,
                  stop: threading.Event | None = None) -> None:
    """`run_unit`, its failure left in the manifest (for the summary) and not raised: the others go on."""
    try:
        run_unit(unit, out, engine, config, stop)
    except Exception:
        pass
