"""`open_source(spec)` picks the reader of a source:

- video file -> `VideoFileSource` (:mod:`streamcosal.io.file`); a ``file://`` URL is its path
  (:func:`local_source`);
- `rtsp://`, `rtmp://`, `http(s)://`, `udp://`, `tcp://`, `srt://`, `/dev/video*` -> `StreamSource`
  (:mod:`streamcosal.io.stream`);
- a pipe or FIFO -> `PipeSource` (:mod:`streamcosal.io.pipe`);
- a folder of images or a list of image files -> `ImageGroupSource` (:mod:`streamcosal.io.images`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import unquote

from streamcosal.io.file import VIDEO_SUFFIXES, Reader, VideoFileSource
from streamcosal.io.frame import FrameSource, Sampler, SourceError
from streamcosal.io.imagefile import ANIMATED_SUFFIXES, image_files
from streamcosal.io.images import ImageGroupSource
from streamcosal.io.pipe import PipeSource, is_pipe
from streamcosal.io.stream import ReconnectPolicy, StreamSource, is_stream

logger = logging.getLogger(__name__)

_FILE_URL = re.compile(r"file:(?://(?P<host>[^/]*))?(?P<path>/.*)?", re.IGNORECASE | re.DOTALL)


def as_sources(sources: str | Path | Iterable[str | Path]) -> list[str | Path]:
    """One source (a path or URL) or several (any iterable) as a list: a string is one source, never its
    characters (each a relative path: ``"."`` the current folder)."""
    return [sources] if isinstance(sources, (str, Path)) else list(sources)


def local_source(spec: str | Path) -> str | Path:
    """``spec`` with a ``file://`` URL replaced by its local path, percent-decoded
    (``file:///data/my%20clip.mp4`` -> ``/data/my clip.mp4``; ``file://localhost/...`` and ``file:/...``
    too); anything else as it is.

    Raises:
        SourceError: a ``file:`` URL of another machine (``file://server/share/clip.mp4``) or without an
            absolute path; the message says what to give instead.
    """
    text = str(spec)
    if text[:5].lower() != "file:":
        return spec
    match = _FILE_URL.fullmatch(text)
    host = (match.group("host") or "") if match else ""
    if match is None or not match.group("path"):
        raise SourceError(f"{text}: a file: URL needs an absolute path (file:///path/to/clip.mp4); "
                          "or give the path itself")
    if host.lower() not in ("", "localhost"):
        raise SourceError(f"{text}: names a file on the machine {host!r}; mount it and give its local path "
                          "(or serve it over http://)")
    return unquote(match.group("path"))


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
    """Open a video file (a path or a ``file://`` URL), live stream/camera, pipe, image folder or list of
    images.

    fps: keep about this many frames per second (by timestamp); stride: keep every stride-th frame.
    reader: for video files, "auto" (decord, PyAV fallback), "decord", "pyav" or "nvdec" (the GPU's decoder
    where it can run, :mod:`streamcosal.io.nvdec`).
    reconnect: backoff policy for live streams (default ReconnectPolicy()).
    Raises SourceError with a message naming the input and what to do.
    """
    sampler = Sampler(fps, stride)
    if isinstance(spec, (list, tuple)):
        paths = [Path(local_source(p)) for p in spec]
        return ImageGroupSource(paths, name=f"{len(paths)} images from {paths[0].parent}" if paths else "[]", sampler=sampler)
    text = str(spec)
    if is_stream(text):
        return StreamSource(text, sampler, reconnect or ReconnectPolicy(), open_timeout_s, read_timeout_s)
    path = Path(local_source(spec))
    if is_pipe(path):
        return PipeSource(path, sampler)
    if path.is_dir():
        images, others = image_files(path)
        videos = [p for p in others if p.suffix.lower() in VIDEO_SUFFIXES]
        if not images and videos:
            suffixes = {p.suffix for p in videos}
            pattern = path / ("*" + suffixes.pop() if len(suffixes) == 1 else "*")
            raise SourceError(f"{path}: a folder is one group of images, and it holds {len(videos)} video file(s) "
                              f"({', '.join(p.name for p in videos[:3])}{', ...' if len(videos) > 3 else ''}) and no "
                              f"image: give the videos themselves ({pattern}), each its own group, or run the folder "
                              "as an archive (the cosal-archive flow: one resumable unit per video)")
        source = ImageGroupSource(images, name=str(path), sampler=sampler)
        if others:  # named, so that nothing is left out without a word
            shown = ", ".join(p.name for p in others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            source.report.warn(f"{path}: left out {len(others)} file(s) that are not images: {shown}")
        return source
    if image_files([path])[0] and path.suffix.lower() not in ANIMATED_SUFFIXES:  # an animated GIF is a video
        return ImageGroupSource([path], name=str(path), sampler=sampler)
    return VideoFileSource(path, sampler, reader=reader)
