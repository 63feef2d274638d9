"""The viewer's web application (Starlette): one page and three read-only JSON/JPEG endpoints.

    GET /                                   the page (``page.html``: HTML, CSS and JS in one file, no CDN)
    GET /api/state                          the folder's runs, sources and consensus (polled by the page)
    GET /api/source/{key}                   a source's timeline and events
    GET /api/frame/{key}/{run}/{frame}.jpg  a frame with its mask drawn (from the stored row)

Nothing else is served: no file of the folder or elsewhere is sent as it is. ``key`` and ``run`` are
looked up among the rows the folder holds (a source's partition key, a run id) and never joined to a
path; anything else is 404. Requests naming another host than the ones the server is reached by are
refused (400), so a web page elsewhere cannot read the viewer through a DNS name of its own.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import AsyncIterator, Sequence
from importlib.resources import files
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from streamcosal.view.data import ResultsView
from streamcosal.view.frames import FrameRenderer

PAGE = "page.html"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
KEY = re.compile(r"[a-z0-9-]{1,64}")  # a partition key (``source_key``)
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")  # as ``ResultWriter`` allows them
# The page's own scripts and styles only (inline), pictures from here and the page's blob: URLs.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "img-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def allowed_hosts(host: str) -> list[str]:
    """The Host headers the server answers: the local names, and ``host`` itself; any host when it
    listens on every address (0.0.0.0 or ::), where the machine's other names reach it too."""
    if host in ("0.0.0.0", "::", ""):
        return ["*"]
    return sorted({*LOCAL_HOSTS, host, host.strip("[]")})


def create_app(out: Path, hosts: Sequence[str] = LOCAL_HOSTS) -> Starlette:
    """The viewer of results folder ``out``, answering requests for the host names ``hosts``.

    The app's state holds the folder (``app.state.view``), the renderer and ``polls``, the number of
    ``/api/state`` requests answered (the page asks every 1.5 s).
    """
    page = files("streamcosal.view").joinpath(PAGE).read_text(encoding="utf-8")
    view, renderer = ResultsView(out), FrameRenderer()

    def index(request: Request) -> Response:
        return HTMLResponse(page, headers=SECURITY_HEADERS)

    def state(request: Request) -> Response:
        request.app.state.polls += 1
        return JSONResponse(view.state(), headers=SECURITY_HEADERS)

    def source(request: Request) -> Response:
        key = request.path_params["key"]
        found = view.source(key) if KEY.fullmatch(key) else None
        if found is None:
            return _not_found(f"no source {key!r} in the results")
        return JSONResponse(found, headers=SECURITY_HEADERS)

    def frame(request: Request) -> Response:
        key, run, index = request.path_params["key"], request.path_params["run"], request.path_params["frame"]
        asked = KEY.fullmatch(key) and RUN_ID.fullmatch(run) and 0 <= index < 2**63  # frame indices are int64
        row = view.row(key, run, index) if asked else None
        if row is None:
            return _not_found(f"no frame {index} of source {key!r} in run {run!r}")
        rendered = renderer.render(row, view.started_in(run), view.started_at(run))
        headers = dict(SECURITY_HEADERS)
        if rendered.note:
            headers["X-Streamcosal-Note"] = rendered.note.encode("ascii", "replace").decode("ascii")
        return Response(rendered.jpeg, media_type="image/jpeg", headers=headers)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/api/state", state, methods=["GET"]),
        Route("/api/source/{key}", source, methods=["GET"]),
        Route("/api/frame/{key}/{run}/{frame:int}.jpg", frame, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        threading.Thread(target=renderer.warm_up, daemon=True, name="streamcosal-view-warm-up").start()
        yield
        renderer.close()

    app = Starlette(routes=routes, middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))],
                    lifespan=lifespan)
    app.state.view, app.state.renderer, app.state.polls = view, renderer, 0
    return app


def _not_found(message: str) -> Response:
    """A 404 that names what was asked for (never a path of the machine)."""
    return PlainTextResponse(message + "\n", status_code=404, headers=SECURITY_HEADERS)

