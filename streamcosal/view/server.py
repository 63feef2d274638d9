"""Serving the viewer with uvicorn on a socket bound here first, so that a port in use is one clear
error before anything starts and port 0 (a free port) can be named in the URL printed.

    sock = bind("127.0.0.1", 0)
    print(url_of(sock))
    serve(create_app(out), sock)           # until Ctrl-C

    with ServerThread(create_app(out), bind("127.0.0.1", 0)) as server:    # in the background
        urllib.request.urlopen(server.url + "api/state")
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from types import TracebackType
from typing import Self

import uvicorn
from starlette.applications import Starlette

from streamcosal.view.folder import ViewError

START_TIMEOUT_S = 10.0


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: a free port).

    Raises:
        ViewError: the port is out of range or in use, or ``host`` is not an address of this machine.
    """
    if not 0 <= port <= 65535:
        raise ViewError(f"--port {port} is not a port: give 1-65535, or 0 for a free one")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise ViewError(f"--host {host} cannot be resolved ({e.strerror}): give an address of this machine, "
                        "e.g. 127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(64)
    except OSError as e:
        sock.close()
        raise ViewError(f"cannot listen on {host} port {port} ({e.strerror or e}): choose another --port "
                        "(0 for a free one) or --host") from None
    sock.set_inheritable(True)
    return sock


def loopback_only(sock: socket.socket) -> bool:
    """Whether a bound socket listens on a loopback address only (127.0.0.0/8, ::1): no other machine reaches it."""
    return ipaddress.ip_address(sock.getsockname()[0].split("%")[0]).is_loopback


def url_of(sock: socket.socket) -> str:
    """The page's URL on a bound socket (an address on every interface is named as 127.0.0.1)."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _server(app: Starlette) -> uvicorn.Server:
    """A uvicorn server of ``app`` that logs only warnings and errors."""
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))


def serve(app: Starlette, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until Ctrl-C or SIGTERM (in the main thread)."""
    _server(app).run(sockets=[sock])


class ServerThread:
    """``app`` served on ``sock`` in a background thread, stopped on leaving the ``with`` block."""

    def __init__(self, app: Starlette, sock: socket.socket) -> None:
        self.url = url_of(sock)
        self._sock = sock
        self._server = _server(app)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True,
                                        name="streamcosal-view")

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the viewer did not start at {self.url}")
            time.sleep(0.01)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.should_exit = True
        self._thread.join(START_TIMEOUT_S)
        self._sock.close()
