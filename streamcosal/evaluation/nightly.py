"""Nightly evaluation: evaluate a model on datasets, keep a history table, spot drops, check floors.

The history is a folder of Parquet files (one per night, written atomically: a new file appends, a
killed night leaves nothing half-written), one row per (night, dataset) with the overall metrics of
:mod:`streamcosal.evaluation`. Any Parquet reader reads the folder::

    duckdb.sql("select * from read_parquet('history/*.parquet') order by run_at")

- :func:`find_drops`: a metric worse than the previous night's on the same dataset and method by
  more than ``tolerance`` (for ``MAE`` worse means higher).
- :func:`check_floors`: ``floors`` maps a metric to its minimum (``MAE``: its maximum); a night
  below a floor fails (:class:`NightFailed`), after the history and the report are written.
- A dataset that cannot be evaluated (missing, unreadable) is a :class:`DatasetFailure`: the other
  datasets' rows, report and plots are still written, then the night fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from streamcosal import markdown
from streamcosal.evaluation.report import predict_and_evaluate, safe_name
from streamcosal.evaluation.results import METRICS, EvalResult
from streamcosal.inference.engine import engine_for
from streamcosal.params import EngineSpec
from streamcosal.storage.layout import new_run_id
from streamcosal.storage.parquet_files import write_atomic

LOWER_IS_BETTER = frozenset({"MAE"})
HISTORY_FORMAT = b"streamcosal.nightly_history"
HISTORY_VERSION = b"1"
HISTORY_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("run_at", pa.timestamp("s", tz="UTC"), nullable=False),
        pa.field("model", pa.string(), nullable=False),  # backbone, version, checkpoint hash
        pa.field("method", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("n_images", pa.int64(), nullable=False),  # evaluated
        pa.field("n_missing", pa.int64(), nullable=False),  # without prediction (skipped)
        *[pa.field(m, pa.float64()) for m in METRICS],
    ],
    metadata={b"streamcosal.schema": HISTORY_FORMAT, b"streamcosal.schema_version": HISTORY_VERSION},
)


class NightFailed(RuntimeError):
    """Datasets of the night could not be evaluated, or a metric is below its configured floor
    (``MAE``: above its ceiling). Raised after the others' history rows and the report are written."""

    def __init__(self, violations: list["FloorViolation"], failures: list["DatasetFailure"]):
        self.violations, self.failures = violations, failures
        parts = []
        if failures:
            parts.append(f"{len(failures)} dataset(s) failed:\n" + "\n".join(f"  {f}" for f in failures))
        if violations:
            parts.append(f"{len(violations)} floor(s) not met:\n" + "\n".join(f"  {v}" for v in violations))
        super().__init__("\n".join(parts))

    def __reduce__(self) -> tuple:
        return (type(self), (self.violations, self.failures))


@dataclass(frozen=True)
class DatasetFailure:
    """A dataset the night could not evaluate, and why."""

    dataset: str
    error: str

    def __str__(self) -> str:
        return f"{self.dataset}: {self.error}"


@dataclass(frozen=True)
class FloorViolation:
    dataset: str
    metric: str
    value: float
    floor: float

    def __str__(self) -> str:
        relation = "above the ceiling" if self.metric in LOWER_IS_BETTER else "below the floor"
        return f"{self.dataset}: {self.metric} = {self.value:.4f}, {relation} {self.floor:.4f}"


@dataclass(frozen=True)
class Drop:
    dataset: str
    method: str
    metric: str
    previous: float
    current: float
    previous_run: str

    @property
    def change(self) -> float:
        return self.current - self.previous

    def __str__(self) -> str:
        return (f"{self.dataset}: {self.metric} {self.previous:.4f} -> {self.current:.4f} ({self.change:+.4f}) "
                f"since run {self.previous_run}")


def distinct_datasets(datasets: Sequence[str]) -> list[str]:
    """``datasets``, checked before any work: each dataset's reports go to ``<night>/<its folder name>/`` and its
    history rows carry that name, so two folders of one name would overwrite and confuse each other.

    Raises:
        ValueError: no dataset, or two datasets whose folders share a name.
    """
    if not datasets:
        raise ValueError("no dataset to evaluate: give at least one dataset folder")
    seen: dict[str, str] = {}
    for dataset in datasets:
        name = safe_name(Path(dataset).name, "dataset")
        if name in seen:
            raise ValueError(f"datasets {seen[name]} and {dataset} share the folder name {name!r}, which names their "
                             "reports and history rows: give each dataset a folder of its own name (a link will do)")
        seen[name] = dataset
    return list(datasets)


def check_floors_config(floors: dict[str, float] | None) -> dict[str, float]:
    """Floors as floats; an unknown metric name is an error (a typo would silently check nothing)."""
    floors = dict(floors or {})
    unknown = sorted(set(floors) - set(METRICS))
    if unknown:
        raise ValueError(f"floors name unknown metric(s) {unknown}; metrics: {list(METRICS)}")
    return {k: float(v) for k, v in floors.items()}


def evaluate_dataset(dataset: str | Path, out: str | Path, *, engine: EngineSpec | None = None,
                     name: str | None = None, groups: Sequence[str] | None = None) -> EvalResult:
    """Segment a dataset with the model (``engine``; default the embedded one) and evaluate it:
    maps, reports and PR/F plots under ``out/<dataset folder name>/`` (see ``predict_and_evaluate``)."""
    model = engine_for(engine or EngineSpec())
    folder = Path(out) / safe_name(Path(dataset).name, "dataset")
    return predict_and_evaluate(model, dataset, folder, name=name or model.name, groups=groups)


def plot_paths(result: EvalResult, out: str | Path) -> list[Path]:
    """The PR and F-measure plots ``evaluate_dataset`` wrote for ``result``."""
    folder = Path(out) / safe_name(Path(result.gt_root).name, "dataset")
    return sorted(p for p in folder.rglob("*_curve.png") if "maps" not in p.relative_to(folder).parts)


def history_rows(results: Sequence[EvalResult], *, run_id: str, model: str,
                 run_at: datetime | None = None) -> pa.Table:
    """One ``HISTORY_SCHEMA`` row per result: its overall metrics."""
    run_at = (run_at or datetime.now(timezone.utc)).replace(microsecond=0)
    rows = [{"run_id": run_id, "run_at": run_at, "model": model, "method": r.method, "dataset": r.dataset,
             "n_images": r.counts.evaluated, "n_missing": r.counts.missing,
             **{m: _finite_or_none(r.overall.get(m)) for m in METRICS}} for r in results]
    return pa.Table.from_pylist(rows, schema=HISTORY_SCHEMA)


def append_history(history: str | Path, rows: pa.Table) -> Path:
    """Add a night's rows to the history folder as one new file (atomic; never overwrites)."""
    if rows.num_rows == 0:
        raise ValueError("no rows to append to the evaluation history")
    run_id = rows["run_id"][0].as_py()
    path = Path(history) / f"{safe_name(run_id, 'night')}.parquet"
    if path.exists():
        raise FileExistsError(f"the history already holds run {run_id!r} ({path}); use a new run id")
    write_atomic(rows.cast(HISTORY_SCHEMA), path)
    return path


def read_history(history: str | Path) -> pa.Table:
    """Every night in the history folder, oldest first (an empty table when there is none yet)."""
    folder = Path(history)
    files = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_"))) if folder.is_dir() else []
    tables = []
    for path in files:
        table = pq.read_table(path)
        if (table.schema.metadata or {}).get(b"streamcosal.schema") != HISTORY_FORMAT:
            raise ValueError(f"{path} is not a streamcosal evaluation history file: move it out of {folder}")
        tables.append(table.cast(HISTORY_SCHEMA))
    if not tables:
        return HISTORY_SCHEMA.empty_table()
    table = pa.concat_tables(tables)
    return table.sort_by([("run_at", "ascending"), ("run_id", "ascending"), ("dataset", "ascending")])


def find_drops(history: pa.Table, run_id: str, tolerance: float = 0.0,
               metrics: Sequence[str] = METRICS) -> list[Drop]:
    """Metrics of run ``run_id`` worse than on the previous run of the same (dataset, method) by more
    than ``tolerance``."""
    rows = history.to_pylist()
    drops = []
    for row in (r for r in rows if r["run_id"] == run_id):
        earlier = [r for r in rows if r["dataset"] == row["dataset"] and r["method"] == row["method"]
                   and r["run_id"] != run_id and r["run_at"] <= row["run_at"]]
        if not earlier:
            continue
        previous = earlier[-1]
        for metric in metrics:
            now, before = row[metric], previous[metric]
            if now is None or before is None:
                continue
            worse = (now - before) if metric in LOWER_IS_BETTER else (before - now)
            if worse > tolerance:
                drops.append(Drop(row["dataset"], row["method"], metric, before, now, previous["run_id"]))
    return drops


def check_floors(rows: pa.Table, floors: dict[str, float]) -> list[FloorViolation]:
    """The metrics of ``rows`` (one night) that miss their floor; a NaN metric misses it too."""
    floors = check_floors_config(floors)
    violations = []
    for row in rows.to_pylist():
        for metric, floor in floors.items():
            value = row[metric]
            value = math.nan if value is None else value
            ok = value <= floor if metric in LOWER_IS_BETTER else value >= floor
            if not ok:
                violations.append(FloorViolation(row["dataset"], metric, value, floor))
    return violations


@dataclass
class NightlyReport:
    """One night: its rows, drops against the previous night, floors missed, plots."""

    run_id: str
    rows: pa.Table
    history_file: Path | None  # None when no dataset could be evaluated
    drops: list[Drop] = field(default_factory=list)
    violations: list[FloorViolation] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    floors: dict[str, float] = field(default_factory=dict)
    recent: pa.Table | None = None  # the last nights, for the report
    failures: list[DatasetFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations and not self.failures

    def markdown(self) -> str:
        shown = ("S", "maxF", "meanF", "maxE", "MAE", "wF")
        lines = [f"# cosal-eval `{self.run_id}`", ""]
        if self.failures:
            lines += [f"**FAILED: {len(self.failures)} dataset(s) could not be evaluated**", ""]
            lines += [f"- {f}" for f in self.failures] + [""]
        if self.violations:
            lines += [f"**FAILED: {len(self.violations)} floor(s) not met**", ""]
            lines += [f"- {v}" for v in self.violations] + [""]
        if self.drops:
            lines += [f"**{len(self.drops)} metric(s) dropped since the previous night**", ""]
            lines += [f"- {d}" for d in self.drops] + [""]
        if self.ok and not self.drops:
            lines += ["All floors met; no drop since the previous night.", ""]
        lines += markdown.table(["dataset", "method", "images", *shown],
                                ([row["dataset"], row["method"], row["n_images"], *(_fmt(row[m]) for m in shown)]
                                 for row in self.rows.to_pylist()), align="llr" + "r" * len(shown))
        if self.floors:
            lines += ["", "Floors: " + ", ".join(f"{m} {'<=' if m in LOWER_IS_BETTER else '>='} {v}"
                                                for m, v in self.floors.items())]
        if self.recent is not None and self.recent.num_rows:
            lines += ["", "## History (latest nights)", ""]
            lines += markdown.table(["run", "dataset", *shown],
                                    ([row["run_id"], row["dataset"], *(_fmt(row[m]) for m in shown)]
                                     for row in self.recent.to_pylist()), align="ll" + "r" * len(shown))
        if self.history_file is not None:
            lines += ["", f"History table: `{self.history_file.parent}` (this night: `{self.history_file.name}`)."]
        if self.plots:
            lines += ["", "Plots:"] + [f"- `{p}`" for p in self.plots]
        return "\n".join(lines) + "\n"


def record_night(results: Sequence[EvalResult], history: str | Path, *, run_id: str, model: str,
                 floors: dict[str, float] | None = None, tolerance: float = 0.0, night: str | Path | None = None,
                 keep_recent: int = 5, run_at: datetime | None = None,
                 failures: Sequence[DatasetFailure] = ()) -> NightlyReport:
    """Append the night's rows (the datasets that were evaluated) to the history, compare with the
    previous night, check the floors; ``failures``: the datasets that could not be evaluated;
    ``night``: the folder the results' reports were written to (the report lists their plots).

    Never raises for a missed floor or a failed dataset: call :func:`raise_for_night` (after publishing).
    """
    floors = check_floors_config(floors)
    rows = history_rows(results, run_id=run_id, model=model, run_at=run_at)
    path = append_history(history, rows) if rows.num_rows else None
    table = read_history(history)
    runs = list(dict.fromkeys(table["run_id"].to_pylist()))[-keep_recent:]
    recent = table.filter(pc.is_in(table["run_id"], value_set=pa.array(runs, pa.string())))
    plots = [p for r in results for p in plot_paths(r, night)] if night is not None else []
    return NightlyReport(run_id, rows, path, find_drops(table, run_id, tolerance), check_floors(rows, floors),
                         plots, floors, recent, list(failures))


def raise_for_night(report: NightlyReport) -> None:
    """Raise :class:`NightFailed` when a dataset failed or the night missed a floor."""
    if not report.ok:
        raise NightFailed(report.violations, report.failures)


def failure(dataset: str | Path, error: BaseException) -> DatasetFailure:
    """The :class:`DatasetFailure` of a dataset whose evaluation raised ``error``."""
    return DatasetFailure(str(dataset), f"{type(error).__name__}: {error}")


def run_nightly(datasets: Sequence[str | Path], out: str | Path, history: str | Path | None = None, *,
                engine: EngineSpec | None = None, floors: dict[str, float] | None = None,
                groups: Sequence[str] | None = None, tolerance: float = 0.0, run_id: str | None = None) -> NightlyReport:
    """The whole night without a scheduler (the ``cosal-eval`` flow runs datasets as tasks)."""
    engine = engine or EngineSpec()
    floors = check_floors_config(floors)
    run_id = run_id or new_run_id("nightly-")
    night = Path(out) / run_id
    results, failures = [], []
    for dataset in datasets:
        try:
            results.append(evaluate_dataset(dataset, night, engine=engine, groups=groups))
        except Exception as error:  # the others go on; the night fails after its report (raise_for_night)
            failures.append(failure(dataset, error))
    return record_night(results, history or Path(out) / "history", run_id=run_id, model=engine.identity(),
                        floors=floors, tolerance=tolerance, night=night, failures=failures)


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
