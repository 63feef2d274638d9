"""Every deployment of streamcosal, declared here and nowhere else.

| deployment | schedule | what |
|---|---|---|
| ``cosal-video/default`` | none (``--param source=... --param out=...``, or ``cameras=FILE``) | videos, a camera file |
| ``cosal-archive/nightly`` | cron ``STREAMCOSAL_ARCHIVE_CRON`` in ``STREAMCOSAL_TIMEZONE`` | a folder of videos, resumable |
| ``cosal-eval/nightly`` | cron ``STREAMCOSAL_EVAL_CRON`` in ``STREAMCOSAL_TIMEZONE`` | evaluation, history, floors |
| ``cosal-train/default`` | none | a training config |

The nightly deployments take their parameters from :class:`~.settings.OrchestrationSettings`;
when those are missing their schedules are served paused.
"""

from __future__ import annotations

from typing import Any

from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron

from streamcosal.params import EngineSpec

from .archive import cosal_archive
from .evaluate import cosal_eval
from .settings import OrchestrationSettings
from .train import cosal_train
from .video import cosal_video

TAGS = ["streamcosal"]


def deployments(settings: OrchestrationSettings | None = None) -> list[RunnerDeployment]:
    """The deployments to serve, configured by ``settings`` (default: from the environment)."""
    s = settings or OrchestrationSettings.from_env()
    common: dict[str, Any] = {"tags": TAGS, "entrypoint_type": EntrypointType.MODULE_PATH}
    engine = EngineSpec(weights=s.weights).model_dump(mode="json")
    archive_params: dict[str, Any] = {"engine": engine}
    if s.archive_videos:
        archive_params["videos"] = s.archive_videos
    if s.archive_out:
        archive_params["out"] = s.archive_out
    eval_params: dict[str, Any] = {"engine": engine, "floors": s.eval_floors}
    if s.eval_datasets:
        eval_params["datasets"] = s.eval_datasets
    if s.eval_out:
        eval_params["out"] = s.eval_out
    archive_ready = bool(s.archive_videos and s.archive_out)
    eval_ready = bool(s.eval_datasets and s.eval_out)
    return [
        cosal_video.to_deployment(
            "default", description="One video, stream, camera group or image folder (source), or every camera of "
                                   "a camera file (cameras: its path) -> Parquet results + overlay.",
            **common),
        cosal_archive.to_deployment(
            "nightly", schedule=Cron(s.archive_cron, timezone=s.timezone, active=archive_ready),
            parameters=archive_params,
            description="Every video of the archive, resumable; set STREAMCOSAL_ARCHIVE_VIDEOS and "
                        "STREAMCOSAL_ARCHIVE_OUT to activate the schedule.", **common),
        cosal_eval.to_deployment(
            "nightly", schedule=Cron(s.eval_cron, timezone=s.timezone, active=eval_ready),
            parameters=eval_params,
            description="Nightly evaluation with a history table and floors; set STREAMCOSAL_EVAL_DATASETS "
                        "and STREAMCOSAL_EVAL_OUT to activate the schedule.", **common),
        cosal_train.to_deployment(
            "default", description="Train the decoder of a configs/*.toml config.", **common),
    ]
