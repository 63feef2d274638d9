"""``streamcosal eval``: Co-SOD metrics of maps, or of a model on a dataset."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape

from streamcosal.params import EngineSpec

if TYPE_CHECKING:
    from streamcosal.evaluation.report import Tracker
    from streamcosal.evaluation.results import EvalResult

from streamcosal.cli.app import ENGINE, app, engine_options, err, fail, load_engine, writable_folder


@app.command("eval")
@engine_options
def eval_(
    out: Annotated[Path, typer.Option("--out", help="Reports, tables and plots go here.")],
    pred: Annotated[Optional[list[Path]], typer.Option("--pred", help="Maps folder PRED/<group>/<stem>.png; repeat to compare methods.")] = None,
    gt: Annotated[Optional[Path], typer.Option("--gt", help="The dataset (CoCA, CoSal2015, CoSOD3k, iCoseg, MSRC or images/+masks/ layout; one dataset of a benchmark pack: PACK/gts/CoCA).")] = None,
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
    if data is not None and pred:
        fail("--pred goes with --gt (score those maps); --data segments the dataset with the model and scores its "
             "maps: give one or the other", 2)
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
        err.print(f"{skipped} images were skipped (no map, or a map or mask that could not be read; see above): the "
                  "metrics cover only the others")
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
