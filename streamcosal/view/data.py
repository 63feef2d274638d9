"""A results folder read into JSON-ready records for the viewer: its sources (one current run each), a
source's timeline and events, a frame's row.

The rows are the folder's current results, as ``streamcosal export`` reads them
(:func:`streamcosal.storage.read_results` and :func:`~streamcosal.storage.read_events`: the visible
rows; hidden ones, of a file not done yet or of a killed run, never). A source with rows of several
runs (``--keep-history``, or a camera's earlier runs, which stay) is shown with its newest run: one
running now, else the one that started last. The folder is re-read only when its visible files change,
so the page can poll :meth:`ResultsView.state` every second or two.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from streamcosal.io.redact import redact
from streamcosal.storage import EVENT_SCHEMA, RESULT_SCHEMA, read_events, read_results
from streamcosal.storage.events import EVENTS_DIR
from streamcosal.storage.parquet_files import data_files, source_key
from streamcosal.storage.results import FRAMES_DIR
from streamcosal.view.folder import RunInfo, ViewError, check_folder, pending_rows, read_runs, run_report

READ_TRIES = 3  # a file replaced while it is read (a re-run committing) is read again


@dataclass
class Snapshot:
    """The visible rows and events as last read, and the file listing they were read from."""

    signature: tuple[tuple[str, int, int], ...] = ()
    frames: pa.Table = field(default_factory=RESULT_SCHEMA.empty_table)
    events: pa.Table = field(default_factory=EVENT_SCHEMA.empty_table)
    error: str | None = None  # why the latest listing could not be read (the previous rows are kept)
    by_source: dict[str, pa.Table] = field(default_factory=dict)  # source key -> its current run's rows


@dataclass(frozen=True)
class SourceView:
    """One source of the folder with the run it is shown with."""

    key: str  # its partition key (``source_key``): the id the page uses
    source: str
    group: str
    run_id: str
    frames: int
    other_runs: list[str]


class ResultsView:
    """The results folder ``out``, read on demand (thread-safe)."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out).absolute()
        self._snapshot = Snapshot()
        self._lock = threading.Lock()

    def check(self) -> None:
        """Refuse a folder that cannot be viewed (missing, a file, empty, foreign, unreadable rows) and one
        with no rows where no run is running either.

        Raises:
            ViewError: with a one-line message naming the folder and what to do.
        """
        check_folder(self.out)
        snapshot = self._refresh()
        if snapshot.error:
            raise ViewError(snapshot.error)
        if snapshot.frames.num_rows == 0 and not any(r.running for r in read_runs(self.out).values()):
            raise ViewError(f"{self.out} holds no results yet (no frame rows, and no run is running there): run "
                            f"`streamcosal video SOURCE --out {self.out}` first, or view it while a run writes to it")

    def state(self) -> dict[str, Any]:
        """The page's summary: the folder, its runs, its sources (each with its status and counts), each
        group's consensus, and a ``version`` that changes whenever the rows do."""
        snapshot, runs = self._refresh(), read_runs(self.out)
        running = [r.run_id for r in runs.values() if r.running]
        pending = pending_rows(self.out, running)
        sources = []
        for view in self._sources(snapshot, runs):
            run = runs.get(view.run_id, RunInfo(view.run_id, False))
            item = {"key": view.key, "source": redact(view.source), "group": redact(view.group),
                    "run_id": view.run_id, "frames": view.frames, "events": self._event_count(snapshot, view),
                    "status": run.source_status(view.source), "other_runs": view.other_runs, "pending": None}
            later = pending.pop(view.key, None)
            if later is not None and later.run_id != view.run_id:
                item["pending"] = {"run_id": later.run_id, "frames": later.frames}
                item["status"] = "running"
            sources.append(item)
        for key, later in pending.items():  # a source whose first rows are still hidden
            sources.append({"key": key, "source": later.source, "group": later.group, "run_id": later.run_id,
                            "frames": 0, "events": 0, "status": "running", "other_runs": [],
                            "pending": {"run_id": later.run_id, "frames": later.frames}})
        groups: dict[str, dict[str, Any]] = {}
        for item in sources:
            run = runs.get(item["run_id"])
            if item["group"] not in groups and run is not None and run.consensus(item["group"]):
                groups[item["group"]] = {"run_id": run.run_id, "consensus": run.consensus(item["group"])}
        return {"out": str(self.out), "now": datetime.now(UTC).isoformat(timespec="seconds"),
                "version": str(hash(snapshot.signature)), "error": snapshot.error, "running": running,
                "runs": [_run_record(r) for r in sorted(runs.values(), key=_newest)],
                "sources": sources, "groups": groups}

    def source(self, key: str) -> dict[str, Any] | None:
        """One source's timeline (frame index, time, area fraction, similarity per frame, in time order)
        and events; None when the folder has no visible rows for ``key``."""
        snapshot, runs = self._refresh(), read_runs(self.out)
        view = next((v for v in self._sources(snapshot, runs) if v.key == key), None)
        if view is None:
            return None
        rows = self._rows(snapshot, view)
        last = rows.slice(rows.num_rows - 1) if rows.num_rows else None
        return {"key": key, "source": redact(view.source), "group": redact(view.group), "run_id": view.run_id,
                "width": last["width"][0].as_py() if last is not None else None,
                "height": last["height"][0].as_py() if last is not None else None,
                "frame_index": rows["frame_index"].to_pylist(),
                "time": [_number(t) for t in rows["timestamp"].to_pylist()],
                "area": [_number(a) for a in rows["area_fraction"].to_pylist()],
                "similarity": [_number(s) for s in rows["similarity"].to_pylist()],
                "events": [_event_record(e) for e in self._events(snapshot, view).to_pylist()]}

    def row(self, key: str, run_id: str, frame_index: int) -> dict[str, Any] | None:
        """The stored row (mask included) of frame ``frame_index`` of source ``key`` in run ``run_id``,
        when that run is the one the source is shown with; None otherwise."""
        snapshot, runs = self._refresh(), read_runs(self.out)
        view = next((v for v in self._sources(snapshot, runs) if v.key == key), None)
        if view is None or view.run_id != run_id:
            return None
        rows = self._rows(snapshot, view)
        found = rows.filter(pc.equal(rows["frame_index"], frame_index))
        return found.slice(0, 1).to_pylist()[0] if found.num_rows else None

    def started_in(self, run_id: str) -> Path | None:
        """The folder run ``run_id`` started in (its relative sources are read from there), from its report;
        None while it runs or where its report does not say."""
        report = run_report(self.out, run_id)
        cwd = report.get("cwd") if report is not None else None
        return Path(cwd) if cwd else None

    def started_at(self, run_id: str) -> datetime | None:
        """When run ``run_id`` started (UTC), from its report; None while it runs or where its report does not say."""
        report = run_report(self.out, run_id)
        try:
            return datetime.fromisoformat(report["started"]) if report and report.get("started") else None
        except (TypeError, ValueError):  # not ours to judge here: the report's other fields still show
            return None

    def _refresh(self) -> Snapshot:
        """The snapshot, re-read when the visible files changed since the last read."""
        with self._lock:
            error = None
            for _ in range(READ_TRIES):
                signature = _listing(self.out)
                if signature == self._snapshot.signature:
                    return self._snapshot
                try:
                    frames, events = _read(self.out)
                except ValueError as e:
                    error = str(e)
                    continue
                if _listing(self.out) == signature:  # nothing replaced while it was read
                    self._snapshot = Snapshot(signature, frames, events)
                    return self._snapshot
            if error is not None:  # the rows read before stay on the page, beside the reason
                self._snapshot = Snapshot(signature, self._snapshot.frames, self._snapshot.events,
                                          f"{self.out} holds a results file streamcosal cannot read: {error}")
            return self._snapshot

    def _sources(self, snapshot: Snapshot, runs: dict[str, RunInfo]) -> list[SourceView]:
        """Every source with visible rows, in order of name, each with its newest run."""
        if snapshot.frames.num_rows == 0:
            return []
        counts = snapshot.frames.group_by(["source", "run_id", "group"]).aggregate([("frame_index", "count")])
        by_source: dict[str, list[tuple[str, str, int]]] = {}
        for source, run_id, group, n in zip(*(counts[c].to_pylist() for c in counts.column_names)):
            by_source.setdefault(source, []).append((run_id, group, n))
        views = []
        for source in sorted(by_source):
            ordered = sorted(by_source[source], key=lambda r: _newest(runs.get(r[0], RunInfo(r[0], False))))
            run_id, group, n = ordered[-1]
            views.append(SourceView(source_key(source), source, group, run_id, n, [r[0] for r in ordered[:-1]]))
        return views

    def _rows(self, snapshot: Snapshot, view: SourceView) -> pa.Table:
        """The shown run's rows of a source, in time order (cached in the snapshot)."""
        cached = snapshot.by_source.get(view.key)
        if cached is not None and cached.num_rows and cached["run_id"][0].as_py() == view.run_id:
            return cached
        table = snapshot.frames
        mine = table.filter(pc.and_(pc.equal(table["source"], view.source), pc.equal(table["run_id"], view.run_id)))
        mine = mine.sort_by([("timestamp", "ascending"), ("frame_index", "ascending")])
        snapshot.by_source[view.key] = mine
        return mine

    def _events(self, snapshot: Snapshot, view: SourceView) -> pa.Table:
        """The shown run's events of a source, in time order."""
        events = snapshot.events
        mine = events.filter(pc.and_(pc.equal(events["source"], view.source), pc.equal(events["run_id"], view.run_id)))
        return mine.sort_by([("start_time", "ascending")])

    def _event_count(self, snapshot: Snapshot, view: SourceView) -> int:
        return self._events(snapshot, view).num_rows


def _listing(out: Path) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of every visible rows and events file: what the snapshot was read from."""
    listing = []
    for table in (FRAMES_DIR, EVENTS_DIR):
        for path in data_files(out / table):
            try:
                stat = path.stat()
            except OSError:  # replaced since the listing: the next one has it
                continue
            listing.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(listing)


def _read(out: Path) -> tuple[pa.Table, pa.Table]:
    """The folder's visible rows (without the probability PNGs) and events; none before a run wrote any."""
    try:
        frames = read_results(out)
    except FileNotFoundError:
        frames = RESULT_SCHEMA.empty_table()
    try:
        events = read_events(out)
    except FileNotFoundError:
        events = EVENT_SCHEMA.empty_table()
    return frames.drop_columns(["prob_png"]), events


def _newest(run: RunInfo) -> tuple[bool, str, str]:
    """Sort key of runs, oldest first: a running run is the newest; then by start time, then id."""
    return run.running, run.started(), run.run_id


def _run_record(run: RunInfo) -> dict[str, Any]:
    """A run as the page lists it."""
    return {"run_id": run.run_id, "running": run.running, "report": run.report, "report_error": run.report_error}


def _event_record(event: dict[str, Any]) -> dict[str, Any]:
    """An event row as JSON (numbers only)."""
    keys = ("start_frame", "end_frame", "start_time", "end_time", "duration", "peak_area_fraction",
            "mean_area_fraction", "n_frames")
    return {k: _number(event[k]) for k in keys}


def _number(value: float | None, digits: int = 6) -> float | None:
    """A number for JSON: floats rounded, NaN and infinities as None."""
    if value is None or isinstance(value, int):
        return value
    return round(value, digits) if math.isfinite(value) else None


__all__ = ["ResultsView", "SourceView", "ViewError"]
