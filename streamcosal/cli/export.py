"""``streamcosal export``: a results folder's current rows as COCO JSON, CSV, JSON or PNG masks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from streamcosal.cli.app import app, fail


@app.command()
def export(
    out: Annotated[Path, typer.Argument(help="A results folder (streamcosal video --out).")],
    to: Annotated[str, typer.Option("--to", help="The folder the export is written to (never overwritten), outside "
                                                 "the results folder.")],
    format: Annotated[Literal["coco", "csv", "json", "png"], typer.Option(
        "--format", help="coco (one COCO JSON with RLE masks), csv or json (the rows and events without mask "
                         "bytes), png (an 8-bit mask per frame).")] = "coco",
    run: Annotated[Optional[str], typer.Option("--run", help="Only this run's rows (default: the current ones).")] = None,
) -> None:
    """Export a results folder's rows for other tools: COCO-format JSON, CSV, JSON or PNG masks."""
    from streamcosal.run.export import export_results

    if not to.strip():
        fail("--to is empty: give the folder to export into (an unset shell variable?)", 2)
    try:
        report = export_results(out, Path(to), format, run_id=run)
    except (ValueError, OSError) as e:
        fail(str(e), 2)
    events = f" and {report.events} events" if report.events else ""
    typer.echo(f"exported {report.frames} frames{events} as {format}: {len(report.files)} files in {to}")
