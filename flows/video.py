"""``cosal-video``: one video, stream, camera group or image folder, or the cameras of a camera file ->
Parquet results + overlay."""

from __future__ import annotations

from typing import Any, Optional, Union

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from streamcosal.params import EngineSpec, RunParams
from streamcosal.run import jobs
from streamcosal.run.records import RunReport

from .inputs import results_folder, served_path, source_paths


@task(name="segment-video", cache_policy=NO_CACHE, persist_result=False)
def segment_video(sources: Union[str, list[str]], out: str, engine: EngineSpec, params: RunParams,
                  group: Optional[str], run_id: Optional[str]) -> RunReport:
    return jobs.run_video(sources, out, engine=engine, params=params, group=group, run_id=run_id,
                          raise_on_failure=False)


@task(name="segment-cameras", cache_policy=NO_CACHE, persist_result=False)
def segment_cameras(cameras: str, out: Optional[str], engine: EngineSpec, params: RunParams,
                    run_id: Optional[str]) -> RunReport:
    return jobs.run_cameras(cameras, out, engine=engine, params=params, run_id=run_id, raise_on_failure=False)


@task(name="publish-report", cache_policy=NO_CACHE, persist_result=False)
def publish(markdown: str, key: str) -> None:
    create_markdown_artifact(markdown, key=key, description="what the run did")


@flow(name="cosal-video", log_prints=True)
def cosal_video(
    source: Union[str, list[str], None] = None,
    out: Optional[str] = None,
    engine: EngineSpec = EngineSpec(),
    params: RunParams = RunParams(),
    group: Optional[str] = None,
    run_id: Optional[str] = None,
    cameras: Optional[str] = None,
) -> dict[str, Any]:
    """Segment the object common to the frames of ``source`` (a video file, stream URL, camera, image
    folder, or a list of them as one group with ``group``); results in ``out`` (``frames/`` Parquet,
    ``events/``, ``overlays/<run_id>/`` with ``params.overlay``, ``runs/<run_id>.json``). ``engine``:
    the model (default: the embedded one). Fails when a source fails (the others' results are kept).
    ``cameras`` instead of ``source``: the path of a camera file (docs/cameras.md), every camera of it
    live, each with its own group, drop policy and latency target; what it sets replaces ``params`` and
    ``engine``, and ``out`` defaults to its ``out``."""
    if (source is None) == (cameras is None):
        raise ValueError("give one of source (videos, streams, cameras) and cameras (a camera file's path)")
    if cameras is not None and group is not None:
        raise ValueError("group is for source: a camera file gives each camera's group")
    out = None if out is None else results_folder(out)
    if cameras is not None:
        report = segment_cameras(served_path(cameras), out, engine, params, run_id)
    elif out is None:
        raise ValueError("out is missing: give the results folder")
    else:
        report = segment_video(source_paths(source), out, engine, params, group, run_id)
    publish(jobs.report_markdown(report), "cosal-video")
    jobs.raise_for_failures(report)
    print(f"{report.frames} frames in {report.seconds:.1f} s, {report.events} events; results in {report.out} "
          f"(run {report.run_id})")
    return jobs.report_summary(report)
