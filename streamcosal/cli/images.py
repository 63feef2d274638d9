"""``streamcosal images``: the common object of every image group, as 8-bit maps."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from streamcosal.params import EngineSpec

if TYPE_CHECKING:
    pass

from streamcosal.cli.app import ENGINE, app, engine_options, err, fail, load_engine, print_consensus, writable_folder


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
