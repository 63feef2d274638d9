"""``streamcosal view``: a results folder as a local web page (sources, timelines, events, frames with
their masks, consensus), updated while a run writes to it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from streamcosal.cli.app import app, err, fail

DEFAULT_PORT = 8765


@app.command()
def view(
    out: Annotated[Path, typer.Argument(help="A results folder (streamcosal video --out).")],
    host: Annotated[str, typer.Option("--host", help="The address to listen on; 127.0.0.1 keeps the page to this "
                                                     "machine (0.0.0.0 opens it to the network, without a login).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="The port to listen on; 0 takes a free one.")] = DEFAULT_PORT,
) -> None:
    """Look at a results folder in a web browser: its sources, each one's timeline (area fraction,
    similarity, events), any frame with its mask drawn, and each group's consensus; a running run's page
    updates as its rows are written. Ctrl-C stops the viewer."""
    try:
        from streamcosal.view.app import allowed_hosts, create_app
        from streamcosal.view.folder import ViewError
        from streamcosal.view.server import bind, loopback_only, serve, url_of
    except ImportError as e:
        fail(f"streamcosal view needs the view extra ({e.name} is missing): pip install \"streamcosal[view]\"", 2)
    try:
        application = create_app(out, allowed_hosts(host))
        application.state.view.check()
        sock = bind(host, port)
    except ViewError as e:
        fail(str(e), 2)
    if not loopback_only(sock):
        err.print(f"warning: --host {host} lets other machines read these results (the viewer has no login)",
                  markup=False, highlight=False)
    typer.echo(f"viewing {out} at {url_of(sock)} (Ctrl-C stops)")
    sys.stdout.flush()  # the URL, at once, also where the output is a pipe or a log
    serve(application, sock)
