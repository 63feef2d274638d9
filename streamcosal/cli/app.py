"""The command line's application and what its commands share: errors, the options generated from
the parameter model (:mod:`streamcosal.params`), the engine they load."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape

from streamcosal.params import EngineSpec, RunParams, explain

if TYPE_CHECKING:
    from streamcosal.inference.engine import CoSalEngine
    from streamcosal.run.records import RunReport


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


MAX_UNDELIVERED_LISTED = 10  # per delivery target, at the end of a run (the run report lists them all)


def print_deliveries(report: RunReport) -> None:
    """Per ``--webhook``/``--mqtt`` target: how many events arrived; those that did not, as a note with the reason
    (not an error: the results are saved; docs/delivery.md)."""
    for sent in report.deliveries:
        total = f"{sent.delivered} of {sent.delivered + len(sent.undelivered)} events delivered to {sent.target}"
        if not sent.undelivered:
            typer.echo(total)
            continue
        err.print(f"[yellow]note:[/yellow] {escape(total)}; not delivered:")
        for miss in sent.undelivered[:MAX_UNDELIVERED_LISTED]:
            err.print(f"  {escape(miss.event)} ({escape(miss.source)} at {miss.start_time:.1f} s): "
                      f"{escape(miss.reason)}")
        if len(sent.undelivered) > MAX_UNDELIVERED_LISTED:
            err.print(f"  and {len(sent.undelivered) - MAX_UNDELIVERED_LISTED} more (all in "
                      f"{escape(report.out)}/runs/{report.run_id}.json)")


def print_run(report: RunReport, out: Path, names: dict[str, str] | None = None) -> None:
    """What a run did: a line per source (``names``: a camera name per source, shown before it), the
    consensus, notes, totals, deliveries, errors; the caller exits with ``report.exit_code``."""
    for run in report.sources:
        camera = f"{names.get(run.source, run.source)}  " if names is not None else ""
        line = f"{run.status:>11}  {camera}{run.source}  group {run.group!r}: {run.frames} frames"
        line += f" at {run.input_size} px" if run.input_size else ""
        if run.live is not None and names is not None:
            line += f", {run.live.dropped} dropped ({run.live.policy})"
            line += f", latency p95 {run.live.latency_p95_s:.2f} s" if run.live.latency_p95_s is not None else ""
        typer.echo(line + (f", overlay {run.overlay}" if run.overlay else ""))
        if run.error:
            err.print(f"[red]error:[/red] {escape(run.error)}")
    print_consensus(report.consensus)
    for note in report.notes:
        err.print(f"[yellow]note:[/yellow] {escape(note)}")
    typer.echo(f"{report.frames} frames in {report.seconds:.1f} s ({report.frames_per_s:.1f} frames/s), "
               f"{report.events} events; results in {out} (run {report.run_id})")
    print_deliveries(report)
    for error in report.errors:
        err.print(f"[red]error:[/red] {escape(error)}")
    if report.errors and out.is_dir():
        err.print(f"free space on the disk of {escape(str(out))} (or fix the folder) and run again")
    if report.interrupted:
        err.print(f"stopped by {report.interrupted}: the results done so far are kept")
