"""``cosal-eval``: a model on the configured datasets -> reports, a history table, a Markdown artifact;
fails when a dataset could not be evaluated or a floor is not met (after the other datasets' history
rows and the artifact are written)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from streamcosal.evaluation import nightly
from streamcosal.evaluation.results import EvalResult
from streamcosal.params import EngineSpec
from streamcosal.storage.layout import new_run_id

from .inputs import listed_paths, results_folder
from .runners import task_runner, transient, unit_resources


@task(name="evaluate-dataset", cache_policy=NO_CACHE, persist_result=False, retries=1, retry_delay_seconds=5,
      retry_condition_fn=transient)
def evaluate_dataset(dataset: str, out: str, engine: EngineSpec, groups: Optional[list[str]]) -> EvalResult:
    return nightly.evaluate_dataset(dataset, out, engine=engine, groups=groups)


@task(name="record-night", cache_policy=NO_CACHE, persist_result=False)
def record(results: list[EvalResult], history: str, run_id: str, model: str, floors: dict[str, float],
           tolerance: float, night: str, failures: list[nightly.DatasetFailure]) -> nightly.NightlyReport:
    return nightly.record_night(results, history, run_id=run_id, model=model, floors=floors, tolerance=tolerance,
                                night=night, failures=failures)


@task(name="publish-report", cache_policy=NO_CACHE, persist_result=False)
def publish(markdown: str) -> None:
    create_markdown_artifact(markdown, key="cosal-eval", description="the night's metrics, drops and floors")


@flow(name="cosal-eval", task_runner=task_runner(), log_prints=True)
def cosal_eval(
    datasets: list[str],
    out: str,
    history: Optional[str] = None,
    engine: EngineSpec = EngineSpec(),
    floors: Optional[dict[str, float]] = None,
    tolerance: float = 0.0,
    groups: Optional[list[str]] = None,
    run_id: Optional[str] = None,
) -> dict[str, float]:
    """Evaluate the model (``engine``; default the embedded one) on each dataset folder; reports under
    ``out/<run_id>/``, one history row per dataset appended to ``history`` (default ``out/history``).
    ``floors``: metric -> minimum (``MAE``: maximum); ``tolerance``: how much worse than the previous
    night counts as a drop."""
    floors = nightly.check_floors_config(floors)
    datasets, out = nightly.distinct_datasets(listed_paths(datasets, "datasets")), results_folder(out)
    run_id = run_id or new_run_id("nightly-")
    night = str(Path(out) / run_id)
    model = engine.identity()
    with unit_resources():
        futures = [evaluate_dataset.submit(d, night, engine, groups) for d in datasets]
    results, failures = [], []
    for dataset, future in zip(datasets, futures):
        try:
            results.append(future.result())
        except Exception as error:  # the others' rows and the artifact are still written; the flow fails after
            failures.append(nightly.failure(dataset, error))
    report = record(results, history or str(Path(out) / "history"), run_id, model, floors, tolerance, night, failures)
    publish(report.markdown())
    nightly.raise_for_night(report)
    return {f"{row['dataset']}/{m}": row[m] for row in report.rows.to_pylist() for m in ("S", "maxF", "MAE")}
