"""The ``streamcosal`` command line."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .engine import CoSalEngine
from .guided import Upsampling
from .imagefile import IMAGE_SUFFIXES
from .imagenet import describe_classes
from .model import WeightsError
from .params import DropPolicy, EngineSpec, Mode, RunParams, explain
from .pipeline import PipelineConfig
from .precision import Precision

if TYPE_CHECKING:
    from .evaluation import EvalResult
    from .report import Tracker

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Co-saliency detection (GICD) for image groups, videos and camera streams.")
err = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: message`` (user text escaped, never read as markup) and exit with ``code``."""
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def writable_folder(folder: Path) -> None:
    """Check that ``folder`` can be created (or is there) and written, without creating it.

    Raises:
        ValueError: it (or a parent) is a file, or it cannot be written (read-only, no permission);
            the message says what to do.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == folder else f" ({existing} is a file)"
        raise ValueError(f"--out {folder} is a file, not a folder{where}: give a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {folder} cannot be written ({existing} is read-only or not yours): "
                         "give a folder you can write to")


@app.callback()
def _root() -> None:
    """Co-saliency detection (GICD) for image groups, videos and camera streams."""


def _option(model: type[BaseModel], name: str) -> Any:
    """The option of a model's field: flag ``--field-name``, help the field's description (its
    default is the model's: ``= RUN.name`` below, ENGINE's in :func:`engine_options`)."""
    return typer.Option("--" + name.replace("_", "-"), help=model.model_fields[name].description)


ENGINE, RUN = EngineSpec(), RunParams()
ENGINE_OPTIONS: dict[str, Any] = {  # EngineSpec's fields as options, in --help's order
    "weights": Annotated[Optional[Path], _option(EngineSpec, "weights")],
    "official": Annotated[Optional[Path], _option(EngineSpec, "official")],
    "vgg16": Annotated[Optional[Path], _option(EngineSpec, "vgg16")],
    "precision": Annotated[Precision, _option(EngineSpec, "precision")],
    "device": Annotated[str, _option(EngineSpec, "device")],
    "input_size": Annotated[Optional[int], _option(EngineSpec, "input_size")],
    "flip": Annotated[bool, typer.Option("--flip/--no-flip", help=EngineSpec.model_fields["flip"].description)],
    "upsampling": Annotated[Optional[Upsampling], _option(EngineSpec, "upsampling")],
    "embedding_share": Annotated[Optional[float], _option(EngineSpec, "embedding_share")],
    "prototype_gate": Annotated[Optional[float], _option(EngineSpec, "prototype_gate")],
    "compile": Annotated[bool, typer.Option("--compile/--no-compile", help=EngineSpec.model_fields["compile"].description)],
}


def engine_options(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` with the engine's options after its own (one set, the same in every command that
    runs a model); it is called with them as ``spec: EngineSpec``, or the run exits 2 with the reason
    when they are not valid."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "spec"]
    options = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                 default=getattr(ENGINE, name)) for name, annotation in ENGINE_OPTIONS.items()]

    @functools.wraps(command)
    def with_spec(**values: Any) -> None:
        try:
            spec = EngineSpec(**{name: values.pop(name) for name in ENGINE_OPTIONS})
        except ValidationError as e:
            fail(explain(e), 2)
        command(**values, spec=spec)

    with_spec.__signature__ = inspect.Signature(own + options)  # type: ignore[attr-defined]  # what typer reads
    return with_spec


def load_engine(spec: EngineSpec) -> CoSalEngine:
    """The engine the options ask for (:meth:`EngineSpec.build`), or exit 2 with the reason; prints
    what runs (model, device, precision) as the run's first line."""
    try:
        engine = spec.build()
    except (WeightsError, ValueError) as e:
        fail(str(e), 2)
    err.print(engine.describe(), markup=False, highlight=False)
    return engine


def print_consensus(consensus: dict[str, list[tuple[str, float]]]) -> None:
    """One line per group: its consensus's most probable ImageNet classes (what was taken as common)."""
    for name, classes in consensus.items():
        typer.echo(f"consensus of group {name!r}: {describe_classes(classes)}")


@app.command()
@engine_options
def images(
    input: Annotated[Path, typer.Argument(help="A folder of groups (INPUT/<group>/<image>) or one folder of images.")],
    out: Annotated[Path, typer.Option("--out", help="Maps are written to OUT/<group>/<stem>.png.")],
    spec: EngineSpec = ENGINE,  # the engine options (@engine_options)
) -> None:
    """Segment the common object of every image group; 8-bit maps at each image's original size."""
    from .images import OutputError, check_outputs, find_groups, segment_folders

    if not input.is_dir():
        fail(f"input folder not found: {input}" if not input.exists() else
             f"{input} is a file, not a folder of images: give the folder that holds it"
             + ("" if input.suffix.lower() in IMAGE_SUFFIXES else
                f" (for a video: streamcosal video {input} --out {out})"), 2)
    try:
        check_outputs(input, out, find_groups(input))
        writable_folder(out)
    except (OutputError, ValueError) as e:
        fail(str(e), 2)
    engine = load_engine(spec)
    report = segment_folders(input, out, engine)
    sizes = sorted(set(report.input_sizes.values()))
    at = f" (at {sizes[0]} px)" if len(sizes) == 1 else f" (at {sizes[0]}-{sizes[-1]} px by image size)" if sizes else ""
    typer.echo(f"wrote {report.maps} maps in {len(report.written)} groups to {out}{at}")
    print_consensus(report.consensus)
    for note in report.notes:
        err.print(escape(note))
    for failure in report.failures:
        err.print(f"[red]failed:[/red] {escape(failure.reason)}")
    if report.interrupted:
        err.print(f"interrupted: the {report.maps} maps written to {escape(str(out))} are kept; run again to redo the rest")
        raise typer.Exit(130)
    if report.stopped:
        fail(f"{report.stopped}; stopped: the {report.maps} maps written to {out} are kept; "
             "free space (or fix the folder) and run again", 1)
    if not report.ok:
        err.print(f"{len(report.failures)} failures; every other image was processed")
        raise typer.Exit(1)


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="A training config (TOML), e.g. configs/lite0.toml.")],
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run from its last epoch checkpoint.")] = False,
    benchmark: Annotated[bool, typer.Option("--benchmark", help="Measure training images/s of the config for fp32 "
                                            "and bf16 (fp16 on GPUs) on this machine, say which one auto uses; train nothing.")] = False,
) -> None:
    """Jigsaw training of the GICD decoder (backbone frozen), validation each epoch, best checkpoint kept."""
    from rich.table import Table

    from .trainconfig import ConfigError
    from .training import TrainingError
    from .training import benchmark as run_benchmark
    from .training import train as run_training

    try:
        if benchmark:
            rows, chosen = run_benchmark(config)
            table = Table("precision", "training images/s", "steps x images", title=f"training speed of {escape(str(config))}")
            for row in rows:
                table.add_row(row.precision + (" (auto)" if row.precision == chosen else ""),
                              f"{row.images_per_s:.2f}", f"{row.steps} x {row.group}")
            Console().print(table)
            typer.echo(f"precision = \"auto\" trains with {chosen} on this machine")
            return
        result = run_training(config, resume=resume)
    except (ConfigError, TrainingError, FileNotFoundError, WeightsError) as e:
        fail(str(e), 1)
    typer.echo(f"{result.name}: {result.epochs_done} epochs, {result.steps_done} steps; best epoch {result.best_epoch} "
               f"(validation score {result.best_score:.3f}) -> {result.best_checkpoint}; metrics in {result.metrics}")


@app.command("eval")
@engine_options
def eval_(
    out: Annotated[Path, typer.Option("--out", help="Reports, tables and plots go here.")],
    pred: Annotated[Optional[list[Path]], typer.Option("--pred", help="Maps folder PRED/<group>/<stem>.png; repeat to compare methods.")] = None,
    gt: Annotated[Optional[Path], typer.Option("--gt", help="The dataset (CoCA, CoSal2015, CoSOD3k, iCoseg, MSRC or images/+masks/ layout).")] = None,
    name: Annotated[Optional[list[str]], typer.Option("--name", help="A method name per --pred (default: the folder's name).")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Predict with the model on this dataset, then evaluate.")] = None,
    spec: EngineSpec = ENGINE,  # the engine options (@engine_options)
) -> None:
    """Co-SOD metrics (pysodmetrics): S, max/mean/adaptive F and E, MAE, wF, PR and F curves; overall and per group.

    Either --pred DIR [--pred DIR2 ...] --gt DIR, or --data DIR to predict with a model (--weights /
    --official; the embedded default otherwise) and evaluate.
    """
    from .images import OutputError
    from .report import EvalBatchError, predict_and_evaluate, run_eval

    if (data is None) == (gt is None):
        err.print("[red]error:[/red] give either --pred DIR --gt DIR, or --data DIR (predict, then evaluate)")
        raise typer.Exit(2)
    try:
        writable_folder(out)
    except ValueError as e:
        fail(str(e), 2)
    try:
        with _progress_bars() as track:
            if data is not None:
                engine = load_engine(spec)
                method = (name or [engine.name])[0]
                results = [predict_and_evaluate(engine, data, out, name=method, track=track)]
            else:
                results = run_eval(pred or [], gt, name, out, track=track)  # type: ignore[arg-type]
    except EvalBatchError as e:
        _print_evaluations(e.results)
        fail(str(e), 1)
    except (ValueError, FileNotFoundError, OutputError) as e:
        fail(str(e), 2)
    _print_evaluations(results)
    typer.echo(f"reports in {out}")
    skipped = sum(r.counts.missing + r.counts.unreadable for r in results)
    if skipped:
        err.print(f"{skipped} images were skipped (no or unreadable map, see above): the metrics cover only the others")
        raise typer.Exit(1)


@contextlib.contextmanager
def _progress_bars() -> Iterator[Tracker]:
    """A progress bar per evaluated method on stderr, shown from the first one on (a segmentation
    before it shows its own)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bars = Progress(*columns, console=err)

    def track(description: str, total: int) -> Callable[[], None]:
        bars.start()
        task = bars.add_task(escape(description), total=total)
        return lambda: bars.advance(task)

    try:
        yield track
    finally:
        bars.stop()


def _print_evaluations(results: list[EvalResult]) -> None:
    """Each method's summary line and warnings, on stderr."""
    from .report import summary_line

    for result in results:
        err.print(escape(summary_line(result)))
        for warning in result.warnings:
            err.print(f"[yellow]warning:[/yellow] {escape(warning)}")


@app.command()
def serve(
    task_runner: Annotated[Optional[str], typer.Option("--task-runner", help="threads (default) or ray: where archive/eval units run.")] = None,
    max_workers: Annotated[Optional[int], typer.Option("--max-workers", help="Threads: units at once (default 2).")] = None,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="Ray: ray://HEAD:10001 or auto (default: a local Ray).")] = None,
    timezone: Annotated[Optional[str], typer.Option("--timezone", help="Time zone of the nightly cron schedules (default UTC).")] = None,
) -> None:
    """Serve the Prefect deployments (cosal-video/default, cosal-archive/nightly, cosal-eval/nightly,
    cosal-train/default) until Ctrl-C. Needs PREFECT_API_URL (e.g. a local `prefect server start`).
    Other settings: STREAMCOSAL_* variables, see docs/orchestration.md."""
    for name, value in (("TASK_RUNNER", task_runner), ("MAX_WORKERS", max_workers), ("RAY_ADDRESS", ray_address),
                        ("TIMEZONE", timezone)):
        if value is not None:
            os.environ[f"STREAMCOSAL_{name}"] = str(value)  # flow runs (subprocesses) read the same settings
    from .flows.runners import MissingExtra
    from .flows.serve import NoPrefectAPI, serve as serve_deployments
    from .flows.settings import OrchestrationSettings

    try:
        serve_deployments(OrchestrationSettings.from_env())
    except (ValueError, NoPrefectAPI, MissingExtra) as e:
        err.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from e


@app.command()
@engine_options
def video(
    sources: Annotated[list[str], typer.Argument(help="Video files, stream URLs (rtsp://, http(s)://, udp://...), /dev/videoN, pipes (/dev/stdin, a FIFO) or image folders.")],
    out: Annotated[Path, typer.Option("--out", help="Results folder: Parquet frames/ and events/, consensus.npz, overlays/, runs/.")],
    group: Annotated[Optional[str], typer.Option("--group", help="One group for every SOURCE (cameras seeing the same object); default one group per source.")] = None,
    mode: Annotated[Mode, _option(RunParams, "mode")] = RUN.mode,
    window: Annotated[int, _option(RunParams, "window")] = RUN.window,
    step: Annotated[Optional[int], _option(RunParams, "step")] = RUN.step,
    stride: Annotated[int, _option(RunParams, "stride")] = RUN.stride,
    fps: Annotated[Optional[float], _option(RunParams, "fps")] = RUN.fps,
    consensus_frames: Annotated[int, _option(RunParams, "consensus_frames")] = RUN.consensus_frames,
    half_life: Annotated[float, _option(RunParams, "half_life")] = RUN.half_life,
    threshold: Annotated[float, _option(RunParams, "threshold")] = RUN.threshold,
    temporal_smoothing: Annotated[bool, typer.Option("--temporal-smoothing/--no-temporal-smoothing", help=RunParams.model_fields[
        "temporal_smoothing"].description)] = RUN.temporal_smoothing,
    overlay: Annotated[bool, _option(RunParams, "overlay")] = RUN.overlay,
    store: Annotated[Optional[Path], typer.Option("--store", help="Consensus store file (default OUT/consensus.npz).")] = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", help="Name of this run's files (default: UTC time + random suffix).")] = None,
    live: Annotated[bool, _option(RunParams, "live")] = RUN.live,
    drop_policy: Annotated[DropPolicy, _option(RunParams, "drop_policy")] = RUN.drop_policy,
    max_latency: Annotated[float, _option(RunParams, "max_latency")] = RUN.max_latency,
    metrics_port: Annotated[Optional[int], _option(RunParams, "metrics_port")] = RUN.metrics_port,
    metrics_host: Annotated[str, _option(RunParams, "metrics_host")] = RUN.metrics_host,
    duration: Annotated[Optional[float], _option(RunParams, "duration")] = RUN.duration,
    spec: EngineSpec = ENGINE,  # the engine options (@engine_options)
) -> None:
    """Segment the object common to the frames of videos, streams or cameras; results to Parquet."""
    import logging

    from .pipeline import run_pipeline

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("streamcosal.metrics").setLevel(logging.INFO)  # the live status line
    try:
        config = PipelineConfig(mode=mode, window=window, step=step, stride=stride, fps=fps,
                                consensus_frames=consensus_frames, half_life=half_life, threshold=threshold,
                                temporal_smoothing=temporal_smoothing, overlay=overlay, store_path=store, run_id=run_id, show_progress=True,
                                live=live, drop_policy=drop_policy, max_latency=max_latency, metrics_port=metrics_port,
                                metrics_host=metrics_host, duration=duration)
        writable_folder(out)
    except ValidationError as e:
        fail(explain(e), 2)
    except ValueError as e:
        fail(str(e), 2)
    engine = load_engine(spec)
    try:
        report = run_pipeline(sources, out, engine, config, group=group)
    except (ValueError, OSError) as e:  # a bad run id, a damaged store, the metrics port in use
        fail(str(e), 2)
    for run in report.sources:
        line = f"{run.status:>11}  {run.source}  group {run.group!r}: {run.frames} frames"
        line += f" at {run.input_size} px" if run.input_size else ""
        typer.echo(line + (f", overlay {run.overlay}" if run.overlay else ""))
        if run.error:
            err.print(f"[red]error:[/red] {escape(run.error)}")
    print_consensus(report.consensus)
    typer.echo(f"{report.frames} frames in {report.seconds:.1f} s ({report.frames_per_s:.1f} frames/s), "
               f"{report.events} events; results in {out} (run {report.run_id})")
    for error in report.errors:
        err.print(f"[red]error:[/red] {escape(error)}")
    if report.errors:
        err.print(f"free space on the disk of {escape(str(out))} (or fix the folder) and run again")
    if report.interrupted:
        err.print(f"stopped by {report.interrupted}: the results done so far are kept")
    raise typer.Exit(report.exit_code)


@app.command()
@engine_options
def search(
    query: Annotated[str, typer.Argument(help="A group name in the store, or a video file, image folder or stream URL.")],
    store: Annotated[Path, typer.Option("--store", help="A results folder (its consensus.npz) or a consensus store file.")],
    k: Annotated[int, typer.Option("-k", help="How many groups.")] = 5,
    frames: Annotated[int, typer.Option("--frames", help="Frames sampled from the query video for its consensus.")] = 32,
    spec: EngineSpec = ENGINE,  # the engine options (@engine_options)
) -> None:
    """The groups/videos whose consensus is nearest to the query's: they share its common object."""
    from .search import search as nearest
    from .sources import SourceError
    from .storage import ConsensusStore

    path = store / "consensus.npz" if store.is_dir() else store
    if not path.is_file():
        fail(f"no consensus store at {path}: run `streamcosal video ... --out DIR` first", 2)
    try:
        consensus_store = ConsensusStore.open(path)
        in_store = query in consensus_store and not Path(query).exists()
        engine = None if in_store else load_engine(spec)
        hits = nearest(consensus_store, query, engine, k=k, frames=frames)
    except (SourceError, ValueError) as e:
        fail(str(e), 2)
    if not hits:
        err.print(f"no other group in {escape(str(path))} to compare with")
    for rank, (name, score) in enumerate(hits, 1):
        typer.echo(f"{rank}\t{score:.4f}\t{name}")
