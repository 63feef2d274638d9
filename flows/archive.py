"""``cosal-archive``: a folder, glob or list of videos, one unit per video on the task runner.

Resumable (the manifest of finished units in ``OUT/archive/``: a rerun skips what is done, and
files of unfinished attempts are deleted first), fault tolerant (a failing video is retried when
the failure may be transient, then recorded as failed with its error; the others finish), and
honest about it: a Markdown artifact lists every video, and the flow fails when any video failed.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait

from streamcosal.inference.engine import engine_for
from streamcosal.params import EngineSpec, RunParams
from streamcosal.run import archive, jobs

from .inputs import listed_paths, results_folder
from .runners import task_runner, transient, unit_resources

UNIT_RETRIES = 2


@task(name="model-identity", cache_policy=NO_CACHE, persist_result=False)
def identify_model(engine: EngineSpec) -> str:
    return engine.identity()


@task(name="plan-archive", cache_policy=NO_CACHE, persist_result=False)
def plan(videos: Union[str, list[str]], out: str, model: str, params: dict[str, Any]) -> archive.ArchivePlan:
    return archive.prepare(videos, out, model, params)


@task(name="video-unit", cache_policy=NO_CACHE, persist_result=False, retries=UNIT_RETRIES, retry_delay_seconds=5,
      retry_condition_fn=transient)
def process_unit(unit: archive.Unit, out: str, engine: EngineSpec, params: RunParams) -> archive.UnitRecord:
    return archive.run_unit(unit, out, engine_for(engine), jobs.pipeline_config(params))


@task(name="merge-consensus-stores", cache_policy=NO_CACHE, persist_result=False)
def merge_stores(out: str) -> Optional[str]:
    path = archive.rebuild_archive_store(out)
    return None if path is None else str(path)


@task(name="publish-summary", cache_policy=NO_CACHE, persist_result=False)
def publish(markdown: str) -> None:
    create_markdown_artifact(markdown, key="cosal-archive", description="every video of the run: done, skipped or failed")


@flow(name="cosal-archive", task_runner=task_runner(), log_prints=True)
def cosal_archive(
    videos: Union[str, list[str]],
    out: str,
    engine: EngineSpec = EngineSpec(),
    params: RunParams = RunParams(),
) -> dict[str, int]:
    """Process every video of ``videos`` (a folder, searched recursively; a glob; a file; or a list)
    into ``out`` (the same Parquet store as ``streamcosal video``), each video a resumable unit keyed
    by its content, ``engine.identity()`` and ``params.result_params()``."""
    videos, out = listed_paths(videos, "videos"), results_folder(out)
    model = identify_model(engine)
    with archive.archive_lock(out):
        todo = plan(videos, out, model, params.result_params())
        with unit_resources():
            futures = [process_unit.submit(unit, out, engine, params) for unit in todo.todo]
        wait(futures)
        merge_stores(out)
    summary = archive.summarize(out, todo.units, todo.duplicates, todo.done, todo.discarded)
    publish(summary.markdown())
    for record in summary.records:  # done, but not whole: said in the run's log, not only in the artifact
        if record.status == "partial":
            get_run_logger().warning(f"{record.video}: partial, {record.frames} frames read: "
                                     + "; ".join(record.warnings[:2]))
    if not summary.ok:
        raise archive.ArchiveFailed(summary)
    print(f"{len(summary.records)} video(s) in {out}: " + ", ".join(f"{n} {k}" for k, n in summary.counts().items()))
    return summary.counts()
