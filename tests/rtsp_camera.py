"""RTSP cameras for tests: H.264 clips of DAVIS frames served by GStreamer's RTSP server.

    clip = make_clip(tmp_path / "swan.mp4", "blackswan")
    with rtsp_camera({"/cam0": clip}) as camera:          # a separate process, stopped by its PID
        run_pipeline([camera.url("/cam0")], ...)
        camera.stop(); camera.start()                      # the camera goes away and comes back

The server (tests/rtsp_server.py) runs under Debian's /usr/bin/python3 (python3-gi and
gir1.2-gst-rtsp-server-1.0, installed by .ci/run), on 127.0.0.1 and a free port, and loops
each clip at its own frame rate. The process is killed by its PID when the `with` ends, also
when the test fails.
"""

from __future__ import annotations

import contextlib
import select
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from prefect_fixtures import free_port
from video_fixtures import davis_frames, encode_video

SERVER = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"
SIZE = (160, 96)  # (width, height): small frames, fast tests


def make_clip(path: Path, video: str = "blackswan", frames: int = 25, fps: int = 25,
              size: tuple[int, int] = SIZE) -> Path:
    """An H.264 MP4 of the first `frames` DAVIS frames of `video` at `fps` (PyAV)."""
    encode_video(davis_frames(video, frames, size), path, fps=fps)
    return path


@dataclass
class RtspCamera:
    """GStreamer's RTSP server serving `mounts` (path -> clip) on 127.0.0.1:`port`."""

    mounts: dict[str, Path]
    port: int = field(default_factory=free_port)
    auth: str | None = None  # "user:password": clients must log in
    process: subprocess.Popen[str] | None = None
    _stderr: IO[str] | None = None

    def url(self, mount: str, credentials: str | None = None) -> str:
        login = f"{credentials}@" if credentials else ""
        return f"rtsp://{login}127.0.0.1:{self.port}{mount}"

    def start(self, timeout_s: float = 20.0) -> None:
        """Start the server and wait for its "ready"."""
        args = [SYSTEM_PYTHON, str(SERVER), str(self.port), *(f"{m}={c}" for m, c in self.mounts.items())]
        if self.auth:
            args += ["--auth", self.auth]
        # a file, not a pipe (a full pipe would block the server), open while the server runs
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        line = self.process.stdout.readline() if ready else ""
        if line.strip() != "ready":
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None
            raise RuntimeError(f"the RTSP server did not start: {line!r} {self.stderr()}")

    def stderr(self) -> str:
        """The end of what the server wrote to stderr (GStreamer's warnings, an abort's assertion)."""
        self._stderr.seek(0)
        return self._stderr.read()[-2000:]

    def stop(self) -> None:
        """Kill the server process (by its PID) and wait for it; a server that died on its own fails
        the test with what it wrote (a test's camera going away is `stop`, never a crash)."""
        process, self.process = self.process, None
        if process is None:
            return
        crashed = process.poll()
        if crashed is None:
            process.kill()
            process.wait(timeout=10)
        said = self.stderr()
        self._stderr.close()
        if crashed not in (None, 0):
            raise RuntimeError(f"the RTSP server on port {self.port} died (exit {crashed}): {said}")


@contextlib.contextmanager
def rtsp_camera(mounts: dict[str, Path], auth: str | None = None) -> Iterator[RtspCamera]:
    camera = RtspCamera(mounts, auth=auth)
    camera.start()
    try:
        yield camera
    finally:
        camera.stop()

