"""Entry points with plain parameters (paths, numbers, strings) for schedulers and flows.

Prefect flows (``streamcosal.flows``) and other schedulers call these: each builds what the
library needs (an engine, a ``PipelineConfig``) from values that fit in a deployment's parameters
and calls the library. No orchestration here, and no Prefect.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any, Sequence

from .engine import CoSalEngine
from .pipeline import PipelineConfig, RunReport, run_pipeline

# PipelineConfig fields a job may set from its parameters (the rest are the job's own business:
# run ids, store paths, progress bars).
CONFIG_FIELDS = ("mode", "window", "step", "stride", "fps", "consensus_frames", "half_life", "threshold",
                 "overlay", "keep_prob_png", "event_threshold", "event_min_duration", "event_max_gap",
                 "flush_every")

_engines: dict[tuple[str | None, str, str], CoSalEngine] = {}
_engines_lock = threading.Lock()


class VideoJobError(RuntimeError):
    """Some sources of a video job failed (the others' results are written); the message says which."""

    def __init__(self, report: RunReport):
        self.report = report
        failed = [s for s in report.sources if s.status == "failed"]
        lines = "\n".join(f"  {s.source}: {s.error}" for s in failed)
        stopped = f"run {report.run_id} stopped by {report.interrupted}; " if report.interrupted else ""
        super().__init__(f"{stopped}{len(failed)} of {len(report.sources)} source(s) failed in run "
                         f"{report.run_id}" + (f":\n{lines}" if lines else ""))

    def __reduce__(self) -> tuple:  # picklable (Ray sends task exceptions between processes)
        return (type(self), (self.report,))


def load_engine(weights: str | Path | None = None, precision: str = "auto", device: str = "auto") -> CoSalEngine:
    """The engine for a checkpoint (``None``: the embedded default model), one per process.

    Engines are cached by (weights, precision, device): a worker that runs many units loads the
    model once. Inference does not change the engine, so threads share it.
    """
    key = (None if weights is None else str(Path(weights).resolve()), precision, device)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            if weights is None:
                engine = CoSalEngine.from_pretrained(precision=precision, device=device)  # type: ignore[arg-type]
            else:
                engine = CoSalEngine.from_checkpoint(weights, precision=precision, device=device)  # type: ignore[arg-type]
            _engines[key] = engine
    return engine


def pipeline_config(params: dict[str, Any] | None = None, **overrides: Any) -> PipelineConfig:
    """A checked ``PipelineConfig`` from job parameters (``CONFIG_FIELDS``) plus overrides.

    Raises:
        ValueError: an unknown parameter, or a value ``PipelineConfig.check`` refuses.
    """
    params = dict(params or {})
    unknown = sorted(set(params) - set(CONFIG_FIELDS))
    if unknown:
        raise ValueError(f"unknown pipeline parameter(s) {unknown}; known: {list(CONFIG_FIELDS)}")
    config = dataclasses.replace(PipelineConfig(), **params, **overrides)
    config.check()
    return config


def result_params(config: PipelineConfig) -> dict[str, Any]:
    """The parameters of ``config`` that change the results (what a resumable unit is keyed by)."""
    keep = [f for f in CONFIG_FIELDS if f != "flush_every"]
    return {f: getattr(config, f) for f in keep}


def run_video(
    sources: str | Sequence[str],
    out: str | Path,
    *,
    weights: str | Path | None = None,
    precision: str = "auto",
    device: str = "auto",
    group: str | None = None,
    run_id: str | None = None,
    params: dict[str, Any] | None = None,
    raise_on_failure: bool = True,
) -> RunReport:
    """What the ``cosal-video`` flow does: ``run_pipeline`` on one video, stream, camera group or
    image folder (``sources``: one or several), results to ``out`` (the CLI's Parquet store).

    Raises:
        VideoJobError: a source failed (its error in the message; the others' results are kept),
            unless ``raise_on_failure`` is False (then see :func:`raise_for_failures`).
        ValueError: bad parameters.
    """
    specs = [sources] if isinstance(sources, (str, Path)) else list(sources)
    config = pipeline_config(params, run_id=run_id)
    report = run_pipeline([str(s) for s in specs], Path(out), load_engine(weights, precision, device), config,
                          group=group)
    if raise_on_failure:
        raise_for_failures(report)
    return report


def raise_for_failures(report: RunReport) -> None:
    """Raise :class:`VideoJobError` when a source of the run failed or the run was stopped."""
    if report.interrupted or any(s.status == "failed" for s in report.sources):
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
             f"({report.frames_per_s:.1f} frames/s), {report.events} events; results in `{report.out}`.", "",
             "| source | group | status | mode | frames | overlay | error |",
             "|---|---|---|---|---:|---|---|"]
    for s in report.sources:
        error = (s.error or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{s.source}` | {s.group} | {s.status} | {s.mode} | {s.frames} | "
                     f"{'`' + s.overlay + '`' if s.overlay else ''} | {error} |")
    if report.interrupted:
        lines += ["", f"Stopped by {report.interrupted}: the results done so far are kept."]
    return "\n".join(lines) + "\n"


def train_markdown(result: Any) -> str:
    """A ``training.TrainResult`` as Markdown, for a flow's artifact."""
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(result.best_metrics.items()))
    return (f"# cosal-train `{result.name}`\n\nBest epoch {result.best_epoch} of {result.epochs_done} "
            f"(score {result.best_score:.4f}): `{result.best_checkpoint}`\n\nTraining state `{result.state}`, "
            f"metrics table `{result.metrics}`.\n\n| metric | value |\n|---|---:|\n{rows}\n")
