"""``cosal-train``: a training config -> the best checkpoint, the training state, a metrics table."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from streamcosal.run import jobs
from streamcosal.training import loop as training

from .inputs import served_path


@task(name="train", cache_policy=NO_CACHE, persist_result=False)
def train(config: str, resume: bool, stop_after: int | None) -> training.TrainResult:
    return training.train(config, resume, stop_after=stop_after)


@task(name="publish-report", cache_policy=NO_CACHE, persist_result=False)
def publish(markdown: str) -> None:
    create_markdown_artifact(markdown, key="cosal-train", description="the run's best epoch and checkpoint")


@flow(name="cosal-train", log_prints=True)
def cosal_train(config: str, resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
    """Train the decoder of a TOML config (``configs/*.toml``); ``resume`` continues a killed run from
    its state. ``stop_after``: leave after this many epochs (a time-boxed run; resume it later)."""
    result = train(served_path(config), resume, stop_after)
    publish(jobs.train_markdown(result))
    return {"best_checkpoint": str(result.best_checkpoint), "best_epoch": result.best_epoch,
            "best_score": result.best_score, "epochs_done": result.epochs_done, **result.best_metrics}

