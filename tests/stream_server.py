"""A tiny local HTTP server that plays an MPEG-TS file like a live stream, for tests.

Each GET on /stream.ts sends the bytes chunk by chunk (no Content-Length, like a live feed)
and closes the connection at the end. Options simulate trouble:

- drop_after_bytes: the first `drops` connections are cut after that many bytes.
- plays: how many connections get the stream; later ones get 404 (the feed is over), so a
  reconnecting client eventually gives up.
- stall_after_bytes: every connection gets that many bytes, then silence (the connection stays
  open until the client gives up): a stalled feed.
- status: every GET is answered with this HTTP error (401, 403, 404, 503...) and no stream.

Use `serve_stream(...)` as a context manager (the server thread stops on exit, also when the
test fails); `server.url` is the address, `server.connections` counts GETs.

`serve_file(data, name)` serves a finished file instead, as a web server does: with its length
(Content-Length) and byte ranges (Range requests, which MP4 readers use to seek).
"""

from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator


@dataclass
class StreamServer:
    url: str
    connections: int = 0


@contextmanager
def serve_stream(
    data: bytes,
    chunk_size: int = 8192,
    chunk_delay_s: float = 0.0,
    drop_after_bytes: int | None = None,
    drops: int = 1,
    plays: int | None = None,
    stall_after_bytes: int | None = None,
    status: int | None = None,
) -> Iterator[StreamServer]:
    """Serve `data` (an MPEG-TS byte string) at http://127.0.0.1:<free port>/stream.ts."""
    state = StreamServer(url="")
    lock = threading.Lock()
    stopping = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # body ends when the connection closes

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            with lock:
                state.connections += 1
                number = state.connections
            if status is not None:
                self.send_error(status)
                return
            if self.path != "/stream.ts" or (plays is not None and number > plays):
                self.send_error(404, "stream over")
                return
            limit = drop_after_bytes if (drop_after_bytes is not None and number <= drops) else len(data)
            limit = min(limit, stall_after_bytes) if stall_after_bytes is not None else limit
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.end_headers()
            try:
                for start in range(0, limit, chunk_size):
                    self.wfile.write(data[start : min(start + chunk_size, limit)])
                    self.wfile.flush()
                    if chunk_delay_s:
                        time.sleep(chunk_delay_s)
                if stall_after_bytes is not None:
                    stopping.wait()  # silence, the connection open, until the server stops
            except (BrokenPipeError, ConnectionResetError):
                pass

    with _running(Handler, "test-stream-server") as port:
        state.url = f"http://127.0.0.1:{port}/stream.ts"
        try:
            yield state
        finally:
            stopping.set()  # a stalled handler lets go before the server stops


@contextmanager
def serve_file(data: bytes, name: str = "clip.mp4", content_type: str = "video/mp4") -> Iterator[StreamServer]:
    """Serve `data` as a static file at http://127.0.0.1:<free port>/<name>, with Content-Length and
    single byte ranges (206 Partial Content); other paths get 404."""
    state = StreamServer(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request a connection, as simple servers do

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            with lock:
                state.connections += 1
            if self.path != f"/{name}":
                self.send_error(404, "no such file")
                return
            start, end = 0, len(data) - 1
            wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if wanted:
                start = int(wanted.group(1))
                end = min(int(wanted.group(2)), end) if wanted.group(2) else end
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            try:
                self.wfile.write(data[start : end + 1])
            except (BrokenPipeError, ConnectionResetError):
                pass

    with _running(Handler, "test-file-server") as port:
        state.url = f"http://127.0.0.1:{port}/{name}"
        yield state


@contextmanager
def _running(handler: type[BaseHTTPRequestHandler], name: str) -> Iterator[int]:
    """An HTTP server of ``handler`` on 127.0.0.1 in a thread while inside; its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
