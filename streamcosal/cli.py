"""The ``streamcosal`` command line."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape

from streamcosal.params import EngineSpec, RunParams, explain

if TYPE_CHECKING:
    from streamcosal.evaluation.report import Tracker
    from streamcosal.evaluation.results import EvalResult
    from streamcosal.inference.engine import CoSalEngine

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
                  context_settings={"max_content_width": 120},
                  help="Co-saliency detection (GICD) for image groups, videos and camera streams.")
err = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: message`` (user text escaped, never read as markup) and exit with ``code``."""
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def writable_folder(folder: Path, option: str = "--out") -> None:
    """Check that ``folder`` can be created (or is there) and written, without creating it.

    Raises:
        ValueError: it (or a parent) is a file, or it cannot be written (read-only, no permission);
            the message names ``option`` and ``folder`` and says what to do.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == folder else f" ({existing} is a file)"
        raise ValueError(f"{option} {folder} is a file, not a folder{where}: give a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {folder} cannot be written ({existing} is read-only or not yours): "
                         "give a folder you can write to")


@app.callback()
def _root() -> None:
    """Co-saliency detection (GICD) for image groups, videos and camera streams."""


def _option(model: type[BaseModel], name: str) -> Any:
    """The option of a model's field: ``--field-name`` (``--field-name/--no-field-name`` for a switch), help
    the field's description."""
    flag = "--" + name.replace("_", "-")
    if model.model_fields[name].annotation in (bool, "bool"):
        flag += f"/--no-{flag[2:]}"
    return typer.Option(flag, help=model.model_fields[name].description)


def model_options(model: type[BaseModel], as_name: str, exclude: frozenset[str] = frozenset()) -> Callable[..., Any]:
    """A decorator: ``command`` gets every field of ``model`` (but ``exclude``) as an option after its own,
    with the model's default, type and description, and is called with them as one ``model`` instance,
    keyword ``as_name``; invalid values exit 2 with the reason. A field added to the model appears in
    every command at once."""
    fields = {name: f for name, f in model.model_fields.items() if name not in exclude}
    default = model()

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != as_name]
        options = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=getattr(default, name),
                                     annotation=Annotated[field.annotation, _option(model, name)])
                   for name, field in fields.items()]

        @functools.wraps(command)
        def with_model(**values: Any) -> None:
            try:
                instance = model(**{name: values.pop(name) for name in fields})
            except ValidationError as e:
                fail(explain(e), 2)
            command(**values, **{as_name: instance})

        with_model.__signature__ = inspect.Signature(own + options)  # type: ignore[attr-defined]  # what typer reads
        return with_model

    return decorate


engine_options = model_options(EngineSpec, "spec")
"""The engine's options (one set, the same in every command that runs a model), as ``spec: EngineSpec``."""
run_options = model_options(RunParams, "params")
"""A video run's options, as ``params: RunParams``."""
ENGINE, RUN = EngineSpec(), RunParams()


def load_engine(spec: EngineSpec) -> CoSalEngine:
    """The engine the options ask for (:meth:`EngineSpec.build`), or exit 2 with the reason; prints
    what runs (model, device, precision) as the run's first line."""
    from streamcosal.inference.engine import engine_for
    from streamcosal.model import WeightsError

    try:
        engine = engine_for(spec)
    except (WeightsError, ValueError) as e:
        fail(str(e), 2)
    err.print(engine.describe(), markup=False, highlight=False)
    return engine


def print_consensus(consensus: dict[str, list[tuple[str, float]]]) -> None:
    """One line per group: its consensus's most probable ImageNet classes (what was taken as common)."""
    from streamcosal.inference.imagenet import describe_classes

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
    from streamcosal.io.imagefile import IMAGE_SUFFIXES
    from streamcosal.run.images import OutputError, check_outputs, find_groups, segment_folders
    from streamcosal.run.interrupts import Interrupted

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
    try:
        report = segment_folders(input, out, engine)
    except Interrupted as stop:
        report = stop.report
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

    from streamcosal.model import WeightsError
    from streamcosal.training.config import ConfigError
    from streamcosal.training.loop import TrainingError
    from streamcosal.training.loop import benchmark as run_benchmark
    from streamcosal.training.loop import train as run_training

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
    from streamcosal.evaluation.report import EvalBatchError, predict_and_evaluate, run_eval
    from streamcosal.run.images import OutputError

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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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
    from streamcosal.evaluation.report import summary_line

    for result in results:
        err.print(escape(summary_line(result)))
        for warning in result.warnings:
            err.print(f"[yellow]warning:[/yellow] {escape(warning)}")


@app.command()
@engine_options
@run_options
def video(
    sources: Annotated[list[str], typer.Argument(help="Video files, stream URLs (rtsp://, http(s)://, udp://...), /dev/videoN, pipes (/dev/stdin, a FIFO) or image folders.")],
    out: Annotated[Path, typer.Option("--out", help="Results folder: Parquet frames/ and events/, consensus.npz, overlays/, runs/.")],
    group: Annotated[Optional[str], typer.Option("--group", help="One group for every SOURCE (cameras seeing the same object); default one group per source.")] = None,
    store: Annotated[Optional[Path], typer.Option("--store", help="Consensus store file (default OUT/consensus.npz).")] = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", help="Name of this run's files (default: UTC time + random suffix).")] = None,
    keep_history: Annotated[bool, typer.Option("--keep-history", help="Keep the results earlier runs wrote for these sources (default: a source's new results replace them once it is done).")] = False,
    params: RunParams = RUN,  # the run options (@run_options)
    spec: EngineSpec = ENGINE,  # the engine options (@engine_options)
) -> None:
    """Segment the object common to the frames of videos, streams or cameras; results to Parquet."""
    import logging

    from streamcosal.io.frame import SourceError
    from streamcosal.io.open import local_source
    from streamcosal.io.stream import is_stream
    from streamcosal.run.records import PipelineConfig
    from streamcosal.storage.files import check_store_path
    from streamcosal.storage.layout import STORE_FILE

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("streamcosal.run.metrics").setLevel(logging.INFO)  # the live status line
    try:
        sources = [str(local_source(s)) for s in sources]  # file:///path/clip.mp4 is the path
        missing = [s for s in sources if not is_stream(s) and not Path(s).exists()]
        if missing:  # before the model loads, and nothing written
            raise ValueError(f"no such file or folder: {', '.join(missing)}. Check the path"
                             + ("s" if len(missing) > 1 else ""))
        config = PipelineConfig(**params.model_dump(), store_path=store, run_id=run_id, show_progress=True,
                                keep_history=keep_history)
        writable_folder(out)
        check_store_path(store or out / STORE_FILE, "--store" if store else "the consensus store")
    except ValidationError as e:
        fail(explain(e), 2)
    except (ValueError, SourceError) as e:
        fail(str(e), 2)
    from streamcosal.run.interrupts import Interrupted
    from streamcosal.run.pipeline import run_pipeline

    engine = load_engine(spec)
    try:
        report = run_pipeline(sources, out, engine, config, group=group)
    except Interrupted as stop:
        report = stop.report
    except (ValueError, OSError) as e:  # a bad run id, a damaged store, the metrics port in use
        fail(str(e), 2)
    for run in report.sources:
        line = f"{run.status:>11}  {run.source}  group {run.group!r}: {run.frames} frames"
        line += f" at {run.input_size} px" if run.input_size else ""
        typer.echo(line + (f", overlay {run.overlay}" if run.overlay else ""))
        if run.error:
            err.print(f"[red]error:[/red] {escape(run.error)}")
    print_consensus(report.consensus)
    for note in report.notes:
        err.print(f"[yellow]note:[/yellow] {escape(note)}")
    typer.echo(f"{report.frames} frames in {report.seconds:.1f} s ({report.frames_per_s:.1f} frames/s), "
               f"{report.events} events; results in {out} (run {report.run_id})")
    for error in report.errors:
        err.print(f"[red]error:[/red] {escape(error)}")
    if report.errors and out.is_dir():
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
    from streamcosal.io.frame import SourceError
    from streamcosal.run.search import check_query, in_store
    from streamcosal.run.search import search as nearest
    from streamcosal.storage import ConsensusStore

    path = store / "consensus.npz" if store.is_dir() else store
    if not path.is_file():
        fail(f"no consensus store at {path}: run `streamcosal video ... --out DIR` first", 2)
    try:
        consensus_store = ConsensusStore.open(path)
        check_query(consensus_store, query)  # a name neither in the store nor on disk: said before the model loads
        engine = None if in_store(consensus_store, query) else load_engine(spec)
        hits = nearest(consensus_store, query, engine, k=k, frames=frames)
    except (SourceError, ValueError) as e:
        fail(str(e), 2)
    if not hits:
        err.print(f"no other group in {escape(str(path))} to compare with")
        return
    typer.echo("rank\tsimilarity\tgroup")  # tab-separated, with a header (cosine similarity of the consensus)
    for rank, (name, score) in enumerate(hits, 1):
        typer.echo(f"{rank}\t{score:.4f}\t{name}")


def _plugin_commands() -> None:
    """Commands other parts of the package contribute (entry points ``streamcosal.commands``: ``serve``
    from the Prefect flows), registered by name without importing their modules' dependencies."""
    for entry in entry_points(group="streamcosal.commands"):
        app.command(entry.name)(entry.load())


_plugin_commands()
