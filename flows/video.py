"""``cosal-video``: one video, stream, camera group or image folder -> Parquet results + overlay."""

from __future__ import annotations

from typing import Any, Optional, Union

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from streamcosal import jobs
from streamcosal.pipeline import RunReport


@task(name="segment-video", cache_policy=NO_CACHE, persist_result=False)
def segment_video(sources: Union[str, list[str]], out: str, weights: Optional[str], precision: str, device: str,
                  group: Optional[str], run_id: Optional[str], params: dict[str, Any]) -> RunReport:
    return jobs.run_video(sources, out, weights=weights, precision=precision, device=device, group=group,
                          run_id=run_id, params=params, raise_on_failure=False)


@task(name="publish-report", cache_policy=NO_CACHE, persist_result=False)
def publish(markdown: str, key: str) -> None:
    create_markdown_artifact(markdown, key=key, description="what the run did")


@flow(name="cosal-video", log_prints=True)
def cosal_video(
    source: Union[str, list[str]],
    out: str,
    weights: Optional[str] = None,
    group: Optional[str] = None,
    mode: str = "auto",
    window: int = 8,
    step: Optional[int] = None,
    stride: int = 1,
    fps: Optional[float] = None,
    consensus_frames: int = 32,
    threshold: float = 0.5,
    overlay: bool = True,
    precision: str = "auto",
    device: str = "auto",
    run_id: Optional[str] = None,
) -> dict[str, Any]:
    """Segment the object common to the frames of ``source`` (a video file, stream URL, camera, image
    folder, or a list of them as one group with ``group``); results in ``out`` (``frames/`` Parquet,
    ``events/``, ``overlays/<run_id>/``, ``runs/<run_id>.json``). ``weights``: a checkpoint
    (default: the embedded model). Fails when a source fails (the others' results are kept)."""
    params = dict(mode=mode, window=window, step=step, stride=stride, fps=fps, consensus_frames=consensus_frames,
                  threshold=threshold, overlay=overlay)
    report = segment_video(source, out, weights, precision, device, group, run_id, params)
    publish(jobs.report_markdown(report), "cosal-video")
    jobs.raise_for_failures(report)
    return jobs.report_summary(report)
