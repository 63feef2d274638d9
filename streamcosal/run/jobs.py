"""Entry points with plain parameters (paths, numbers, strings) for schedulers and flows.

Prefect flows (``streamcosal.flows``) and other schedulers call these: each builds what the
library needs (an engine from an :class:`~streamcosal.params.EngineSpec`, a ``PipelineConfig``
from :class:`~streamcosal.params.RunParams`) and calls the library. No orchestration here, and no
Prefect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from streamcosal import markdown
from streamcosal.inference.engine import engine_for
from streamcosal.inference.imagenet import describe_classes
from streamcosal.io.open import as_sources, local_source
from streamcosal.params import EngineSpec, RunParams
from streamcosal.run.cameras import load_cameras
from streamcosal.run.pipeline import run_pipeline
from streamcosal.run.records import PipelineConfig, RunReport


class VideoJobError(RuntimeError):
    """Some sources of a video job failed (the others' results are written); the message says which."""

    def __init__(self, report: RunReport):
        self.report = report
        failed = [s for s in report.sources if s.status == "failed"]
        lines = "\n".join(f"  {s.error}" if (s.error or "").startswith(s.source) else f"  {s.source}: {s.error}"
                          for s in failed)  # an error that names its source is not prefixed with it again
        stopped = f"run {report.run_id} stopped by {report.interrupted}; " if report.interrupted else ""
        unsaved = "".join(f"\n  {e}" for e in report.errors)  # e.g. the last results, on a full disk
        super().__init__(f"{stopped}{len(failed)} of {len(report.sources)} source(s) failed in run "
                         f"{report.run_id}" + (f":\n{lines}" if lines else "")
                         + (f"\nnot saved:{unsaved}" if unsaved else ""))

    def __reduce__(self) -> tuple:  # picklable (Ray sends task exceptions between processes)
        return (type(self), (self.report,))


def run_video(
    sources: str | Sequence[str],
    out: str | Path,
    *,
    engine: EngineSpec | None = None,
    params: RunParams | None = None,
    group: str | None = None,
    run_id: str | None = None,
    raise_on_failure: bool = True,
) -> RunReport:
    """What the ``cosal-video`` flow does: ``run_pipeline`` on one video, stream, camera group or
    image folder (``sources``: one or several), results to ``out`` (the CLI's Parquet store).

    Raises:
        VideoJobError: a source failed (its error in the message; the others' results are kept),
            unless ``raise_on_failure`` is False (then see :func:`raise_for_failures`).
    """
    specs = as_sources(sources)
    config = pipeline_config(params or RunParams(), run_id=run_id)
    report = run_pipeline([str(local_source(s)) for s in specs], Path(out), engine_for(engine or EngineSpec()), config,
                          group=group)  # a file:// URL is its path
    if raise_on_failure:
        raise_for_failures(report)
    return report


def run_cameras(
    cameras: str | Path,
    out: str | Path | None = None,
    *,
    engine: EngineSpec | None = None,
    params: RunParams | None = None,
    run_id: str | None = None,
    raise_on_failure: bool = True,
    **run: Any,
) -> RunReport:
    """What the ``cosal-video`` flow does with a camera file: every enabled camera of ``cameras``
    (:mod:`streamcosal.run.cameras`), read live, each in its group with its drop policy and latency target;
    results to ``out`` (default: the file's ``out``). ``engine`` and ``params``: what the file does not set;
    ``run``: more `PipelineConfig` settings (``reconnect``...).

    Raises:
        CameraFileError: the file is wrong (one line per problem, naming the camera), before any work.
        VideoJobError: a camera failed, unless ``raise_on_failure`` is False.
    """
    file = load_cameras(cameras)
    config = file.pipeline_config(params, run_id=run_id, **run)
    report = run_pipeline(file.sources(), file.out_folder(out), engine_for(file.engine(engine)), config)
    if raise_on_failure:
        raise_for_failures(report)
    return report


def pipeline_config(params: RunParams, **run: Any) -> PipelineConfig:
    """The ``PipelineConfig`` of ``params`` plus the caller's own settings (``run_id``, ``store_path``...)."""
    return PipelineConfig(**params.model_dump(), **run)


def raise_for_failures(report: RunReport) -> None:
    """Raise :class:`VideoJobError` when a source of the run failed, the run was stopped or some of
    its results could not be saved (``report.errors``: the CLI exits 1 then too)."""
    if report.interrupted or report.errors or any(s.status == "failed" for s in report.sources):
        raise VideoJobError(report)


def report_summary(report: RunReport) -> dict[str, Any]:
    """The few numbers of a run report a scheduler shows as the run's result."""
    return {"run_id": report.run_id, "out": report.out, "frames": report.frames, "events": report.events,
            "seconds": round(report.seconds, 2), "frames_per_s": round(report.frames_per_s, 2),
            "sources": {s.source: {"status": s.status, "frames": s.frames, "overlay": s.overlay}
                        for s in report.sources}}


def report_markdown(report: RunReport) -> str:
    """A run report as Markdown (a table of sources), for a flow's artifact."""
    lines = [f"# cosal-video run `{report.run_id}`", "",
             f"Model {report.model} ({report.precision} on {report.device}); {report.frames} frames in {report.seconds:.1f} s "
             f"({report.frames_per_s:.1f} frames/s), {report.events} events; results in `{report.out}`.", ""]
    lines += markdown.table(["source", "group", "status", "mode", "px", "frames", "overlay", "error"],
                            ([f"`{s.source}`", s.group, s.status, s.mode, s.input_size or "", s.frames,
                              f"`{s.overlay}`" if s.overlay else "", s.error or ""] for s in report.sources),
                            align="llllrr")
    if report.consensus:
        lines += ["", "What each group's consensus is about (its most probable ImageNet classes):",
                  *(f"- {group}: {describe_classes(classes)}" for group, classes in report.consensus.items())]
    if report.interrupted:
        lines += ["", f"Stopped by {report.interrupted}: the results done so far are kept."]
    if report.errors:
        lines += ["", "Not saved:", *(f"- {e}" for e in report.errors)]
    return "\n".join(lines) + "\n"


def train_markdown(result: Any) -> str:
    """A ``training.TrainResult`` as Markdown, for a flow's artifact."""
    rows = markdown.table(["metric", "value"], ([k, f"{v:.4f}"] for k, v in sorted(result.best_metrics.items())), "lr")
    return (f"# cosal-train `{result.name}`\n\nBest epoch {result.best_epoch} of {result.epochs_done} "
            f"(score {result.best_score:.4f}): `{result.best_checkpoint}`\n\nTraining state `{result.state}`, "
            f"metrics table `{result.metrics}`.\n\n" + "\n".join(rows) + "\n")
