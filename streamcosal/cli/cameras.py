"""``streamcosal cameras``: every camera of a camera file (YAML: each camera's URL, group, drop policy and
latency target, and the run's settings) in one live run; ``--check`` checks the file without running."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.markup import escape

from streamcosal.cli.app import app, err, fail, load_engine, print_run, writable_folder
from streamcosal.params import explain

if TYPE_CHECKING:
    from streamcosal.run.cameras import CameraFile


@app.command("cameras")
def cameras_command(
    file: Annotated[Path, typer.Argument(help="The camera file (YAML): each camera's url, group, drop_policy, "
                                              "max_latency; metrics, defaults, out, model. See docs/cameras.md.")],
    out: Annotated[Path | None, typer.Option("--out", help="Results folder (default: the file's out).")] = None,
    store: Annotated[Path | None, typer.Option(
        "--store", help="Consensus store file (default OUT/consensus.npz).")] = None,
    run_id: Annotated[str | None, typer.Option(
        "--run-id", help="Name of this run's files (default: UTC time + random suffix).")] = None,
    check: Annotated[bool, typer.Option(
        "--check", help="Check the file and list its cameras (passwords as ***), without running.")] = False,
) -> None:
    """Run every camera of a camera file at once, live, each in its group with its drop policy and latency target."""
    import logging

    from streamcosal.io.frame import SourceError
    from streamcosal.run.cameras import CameraFileError, load_cameras
    from streamcosal.storage.files import check_store_path
    from streamcosal.storage.layout import STORE_FILE

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("streamcosal.run.metrics").setLevel(logging.INFO)  # the live status line
    try:
        camera_file = load_cameras(file)
        config = camera_file.pipeline_config(store_path=store, run_id=run_id, show_progress=True)
        if check:
            _list(camera_file)
            return
        folder = camera_file.out_folder(out)
        spec = camera_file.engine()
        writable_folder(folder)
        check_store_path(store or folder / STORE_FILE, "--store" if store else "the consensus store")
    except CameraFileError as e:
        for problem in e.problems:
            err.print(f"[red]error:[/red] {escape(problem)}")
        raise typer.Exit(2) from None
    except ValidationError as e:
        fail(f"{file}: {explain(e)}", 2)
    except (ValueError, SourceError) as e:
        fail(str(e), 2)
    from streamcosal.run.interrupts import Interrupted
    from streamcosal.run.pipeline import run_pipeline

    engine = load_engine(spec)
    try:
        report = run_pipeline(camera_file.sources(), folder, engine, config)
    except Interrupted as stop:
        report = stop.report
    except (ValueError, OSError) as e:  # a bad run id, a damaged store, the metrics port in use
        fail(str(e), 2)
    print_run(report, folder, camera_file.names())
    raise typer.Exit(report.exit_code)


def _list(camera_file: CameraFile) -> None:
    """The cameras as the run takes them, tab-separated under a header (disabled ones last)."""
    from streamcosal.io.redact import redact

    config = camera_file.pipeline_config()
    typer.echo("camera\tgroup\tdrop policy\tmax latency\tsampling\tsource")
    sources = {name: source for source, name in camera_file.names().items()}
    own = {name: config.for_source(source) for name, source in sources.items()}
    group = {name: config.per_source[source].group or name for name, source in sources.items()}
    members: dict[str, list[str]] = {}
    for name, source in sources.items():
        members.setdefault(group[name], []).append(source)
    target = {name: config.group_latency(group_sources) for name, group_sources in members.items()}
    for name, o in own.items():
        sampling = f"{o.fps:g} frames/s" if o.fps else f"every {o.stride}" if o.stride > 1 else "every frame"
        shared = target[group[name]]  # a group's windows keep to one target (None: a camera with `all`)
        latency = "none (all)" if shared is None else f"{o.max_latency:g} s"
        if shared is not None and shared < o.max_latency:
            latency += f" (the group's: {shared:g} s)"
        typer.echo(f"{name}\t{group[name]}\t{o.drop_policy}\t{latency}\t{sampling}\t{sources[name]}")
    for name, camera in camera_file.cameras.items():
        if not camera.enabled:
            typer.echo(f"{name}\t-\t-\t-\t-\t{redact(camera.url)} (disabled)")
