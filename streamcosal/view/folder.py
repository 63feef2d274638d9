"""A results folder as the viewer sees it: whether it is one, its runs (their reports and whether each
is running now), and the rows a running run has written but not shown yet.

A run's report (``runs/<run_id>.json``) is written when the run ends; while it runs, its lock
(``runs/<run_id>.lock``) is held (:func:`streamcosal.storage.layout.is_running`). A file's rows stay
hidden (``.<run_id>.<seq>.parquet``) until the file is done, so a running run's file sources are
known here only by those hidden files: :func:`pending_rows` counts them, without showing them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from streamcosal.io.redact import redact
from streamcosal.storage.layout import REPORTS_DIR, is_running
from streamcosal.storage.parquet_files import PARTITION_KEY
from streamcosal.storage.results import FRAMES_DIR

RUN_STATUS_UNKNOWN = "ended without a report"
"""What a run that is not running and left no report is shown as (killed, or its report not saved)."""


class ViewError(ValueError):
    """The folder cannot be viewed; the message names it and says what to do (one line)."""


@dataclass(frozen=True)
class RunInfo:
    """One run of the folder: whether it runs now and what its report says (None while it runs)."""

    run_id: str
    running: bool
    report: dict[str, Any] | None = None
    report_error: str | None = None  # the report is there but cannot be read

    def started(self) -> str:
        """When the run started (UTC, ISO 8601), or '' when unknown."""
        return str((self.report or {}).get("started") or "")

    def consensus(self, group: str) -> list[tuple[str, float | None]]:
        """The 3 most probable ImageNet classes of ``group``'s consensus at the run's end, with their
        probabilities; [] if none."""
        return [(str(name), p) for name, p in (self.report or {}).get("consensus", {}).get(group, [])]

    def source_status(self, source: str) -> str:
        """What happened to ``source`` in this run: running, done, partial, failed, interrupted..."""
        if self.running:
            return "running"
        if self.report is None:
            return RUN_STATUS_UNKNOWN
        for run in self.report.get("sources", []):
            if run.get("source") == source:
                return str(run.get("status", RUN_STATUS_UNKNOWN))
        return "done" if self.report.get("exit_code") == 0 else RUN_STATUS_UNKNOWN


@dataclass(frozen=True)
class Pending:
    """A running run's rows of one source that are written but hidden until the source is done."""

    source: str
    group: str
    run_id: str
    frames: int
    files: list[str] = field(default_factory=list)


def check_folder(out: Path) -> None:
    """Refuse what is not a results folder, with a one-line message naming it.

    Raises:
        ViewError: ``out`` is missing, a file, empty, or a folder without ``runs/`` and ``frames/``.
    """
    if not out.exists():
        raise ViewError(f"no results folder at {out}: give the folder a run wrote its results to "
                        "(the --out of streamcosal video)")
    if not out.is_dir():
        raise ViewError(f"{out} is a file, not a results folder: give the folder a run wrote its results to "
                        "(the --out of streamcosal video)")
    if not any(out.iterdir()):
        raise ViewError(f"{out} is empty: no results yet; run `streamcosal video SOURCE --out {out}` first, "
                        "then view it")
    if not (out / REPORTS_DIR).is_dir() and not (out / FRAMES_DIR).is_dir():
        raise ViewError(f"{out} is not a streamcosal results folder (no runs/ or frames/ in it): give the folder "
                        "a run wrote its results to (the --out of streamcosal video)")


def read_runs(out: Path) -> dict[str, RunInfo]:
    """Every run with a report or a lock in ``out/runs``, by run id."""
    folder = out / REPORTS_DIR
    ids = {p.stem for p in folder.glob("*.json")} | {p.stem for p in folder.glob("*.lock")}
    runs = {}
    for run_id in sorted(ids):
        running = (folder / f"{run_id}.lock").exists() and _running(out, run_id)
        report, error = (None, None) if running else _read_report(folder / f"{run_id}.json")
        runs[run_id] = RunInfo(run_id, running, report, error)
    return runs


def _running(out: Path, run_id: str) -> bool:
    """Whether run ``run_id``'s lock is held; False where the lock cannot be tried (a read-only folder)."""
    try:
        return is_running(out, run_id)
    except OSError:
        return False


def run_report(out: Path, run_id: str) -> dict[str, Any] | None:
    """The JSON-ready part of run ``run_id``'s report; None where it has none yet (it runs) or it cannot be read."""
    return _read_report(out / REPORTS_DIR / f"{run_id}.json")[0]


def _read_report(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the JSON-ready part of a run report, None), (None, why it cannot be read) or (None, None): no report."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, f"{path.name} cannot be read ({e.strerror or e})"
    return _report(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=1024)
def _report(path: str, size: int, mtime_ns: int) -> tuple[dict[str, Any] | None, str | None]:
    """:func:`_read_report` of a report file as it is now (cached by its size and time: reports are written
    once, atomically)."""
    name = Path(path).name
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as e:
        return None, f"{name} cannot be read ({e})"
    if not isinstance(data, dict):
        return None, f"{name} is not a run report"
    return report_summary(data), None


def report_summary(data: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of a run report: times, model, counts, consensus, per-source status and
    messages; every text with URL passwords redacted (they are already; this keeps it so)."""
    keys = ("run_id", "started", "cwd", "model", "precision", "device", "seconds", "frames", "events", "interrupted",
            "exit_code", "frames_per_s")
    summary: dict[str, Any] = {k: _clean(data.get(k)) for k in keys}
    summary["notes"] = [redact(str(n)) for n in data.get("notes", []) or []]
    summary["errors"] = [redact(str(n)) for n in data.get("errors", []) or []]
    summary["consensus"] = {redact(str(g)): [[redact(str(name)), _clean(round(float(p), 4))] for name, p in classes]
                            for g, classes in (data.get("consensus") or {}).items()}
    summary["sources"] = [{"source": redact(str(s.get("source", ""))), "group": redact(str(s.get("group", ""))),
                           "status": str(s.get("status", "")), "frames": _clean(s.get("frames")),
                           "error": redact(str(s["error"])) if s.get("error") else None,
                           "warnings": [redact(str(w)) for w in s.get("warnings", []) or []]}
                          for s in data.get("sources", []) or [] if isinstance(s, dict)]
    return summary


def _clean(value: Any) -> Any:
    """A report value as JSON-safe text or number: strings redacted, a number that is not finite as None."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def pending_rows(out: Path, running: list[str]) -> dict[str, Pending]:
    """The hidden rows of the ``running`` runs, by partition (source key): what a file source being
    processed has written so far (shown only as a count: it becomes visible when the source is done)."""
    pending: dict[str, Pending] = {}
    for run_id in running:
        for path in sorted((out / FRAMES_DIR).glob(f"{PARTITION_KEY}=*/.{run_id}.*.parquet")):
            try:
                stat = path.stat()
                source, group, rows = _hidden_file(str(path), stat.st_size, stat.st_mtime_ns)
            except (OSError, ValueError):  # committed (renamed) since the listing, or still odd: skip
                continue
            key = path.parent.name.split("=", 1)[1]
            before = pending.get(key)
            frames = rows + (before.frames if before else 0)
            files = (before.files if before else []) + [path.name]
            pending[key] = Pending(redact(source), redact(group), run_id, frames, files)
    return pending


@lru_cache(maxsize=4096)
def _hidden_file(path: str, size: int, mtime_ns: int) -> tuple[str, str, int]:
    """(source, group, rows) of one hidden rows file (cached by its size and time: it never changes)."""
    table = pq.read_table(path, columns=["source", "group"])
    if table.num_rows == 0:
        raise ValueError(f"{path} holds no rows")
    return str(table["source"][0]), str(table["group"][0]), table.num_rows
