"""`open_source(spec)` picks the reader of a source:

- video file -> `VideoFileSource` (:mod:`streamcosal.io.file`);
- `rtsp://`, `rtmp://`, `http(s)://`, `udp://`, `tcp://`, `srt://`, `/dev/video*` -> `StreamSource`
  (:mod:`streamcosal.io.stream`);
- a pipe or FIFO -> `PipeSource` (:mod:`streamcosal.io.pipe`);
- a folder of images or a list of image files -> `ImageGroupSource` (:mod:`streamcosal.io.images`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from streamcosal.io.file import Reader, VideoFileSource
from streamcosal.io.frame import FrameSource, Sampler
from streamcosal.io.imagefile import IMAGE_SUFFIXES
from streamcosal.io.images import ImageGroupSource
from streamcosal.io.pipe import PipeSource, is_pipe
from streamcosal.io.stream import ReconnectPolicy, StreamSource, is_stream

logger = logging.getLogger(__name__)


def open_source(
    spec: str | Path | Sequence[str | Path],
    *,
    fps: float | None = None,
    stride: int = 1,
    reader: Reader = "auto",
    reconnect: ReconnectPolicy | None = None,
    open_timeout_s: float = 10.0,
    read_timeout_s: float = 10.0,
) -> FrameSource:
    """Open a video file, live stream/camera, pipe, image folder or list of images.

    fps: keep about this many frames per second (by timestamp); stride: keep every stride-th frame.
    reader: for video files, "auto" (decord, PyAV fallback), "decord" or "pyav".
    reconnect: backoff policy for live streams (default ReconnectPolicy()).
    Raises SourceError with a message naming the input and what to do.
    """
    sampler = Sampler(fps, stride)
    if isinstance(spec, (list, tuple)):
        paths = [Path(p) for p in spec]
        return ImageGroupSource(paths, name=f"{len(paths)} images from {paths[0].parent}" if paths else "[]", sampler=sampler)
    text = str(spec)
    if is_stream(text):
        return StreamSource(text, sampler, reconnect or ReconnectPolicy(), open_timeout_s, read_timeout_s)
    path = Path(spec)
    if is_pipe(path):
        return PipeSource(path, sampler)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return ImageGroupSource(images, name=str(path), sampler=sampler)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageGroupSource([path], name=str(path), sampler=sampler)
    return VideoFileSource(path, sampler, reader=reader)
