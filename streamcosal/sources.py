"""Frame sources: video files, live streams/cameras and image groups, as iterators of `Frame`s.

`open_source(spec)` picks the reader:

- video file -> `VideoFileSource`: decoded with decord (`VideoReader.get_batch` on the sampled
  indices, timestamps from `get_frame_timestamp`); PyAV takes over for anything decord cannot
  open (e.g. a truncated MP4) or fails on while decoding (corrupt packets make decord raise for
  the whole batch): PyAV decodes packet by packet, skipping and counting bad ones.
  Both readers return upright frames: decord 0.6.0 applies the display matrix itself; for PyAV
  we rotate by `VideoFrame.rotation` (degrees counter-clockwise). decord timestamps are float32
  frame start times (error below 1 ms even for hours-long videos); PyAV timestamps are exact,
  `(pts - stream.start_time) * time_base`, so variable frame rate is right in both.
- `rtsp://`, `rtmp://`, `http(s)://`, `udp://`, `tcp://`, `srt://`, `/dev/video*` ->
  `StreamSource` (PyAV), which reconnects with exponential backoff after a drop.
- a pipe or FIFO (`/dev/stdin` fed by `ffmpeg ... -f mpegts -`, a named pipe) -> `PipeSource`
  (PyAV, one pass at the writer's pace, no length: read in streaming mode; ends when the writer
  closes it).
- a folder of images (sorted by name) or a list of image files -> `ImageGroupSource`.

Every source counts what it skipped in `source.report` (`SourceReport`) and logs a warning
naming the file/URL and frame; errors a user must fix raise `SourceError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Sequence

import av
import numpy as np

from .imagefile import IMAGE_SUFFIXES, ImageReadError, image_sizes, read_image

logger = logging.getLogger(__name__)

STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://", "rtp://")
Reader = Literal["auto", "decord", "pyav"]


class SourceError(Exception):
    """A source cannot be opened or read; the message names it and says what to do."""


@dataclass
class Frame:
    """One decoded frame.

    image: (H, W, 3) uint8 RGB, upright (display rotation applied).
    index: frame index in the source (counts skipped/lost frames too, keeps increasing across
        stream reconnects).
    timestamp: seconds since the first frame of the source (NaN for image groups: no time).
    source: the file, URL or image path it came from.
    captured: wall-clock time (time.time()) a live reader received it; None when not read live.
    """

    image: np.ndarray
    index: int
    timestamp: float
    source: str
    captured: float | None = None


@dataclass
class VideoInfo:
    """What a source is, before decoding it all (after rotation: width/height are upright)."""

    width: int
    height: int
    fps: float  # average frame rate; 0.0 for image groups
    frame_count: int | None  # None when unknown (live streams)
    duration: float | None  # seconds; None when unknown
    rotation: int  # display rotation applied to frames, degrees counter-clockwise
    codec: str


@dataclass
class SourceReport:
    """What went wrong while reading, so a batch job can report it and carry on."""

    frames_yielded: int = 0
    bad_packets: int = 0  # packets the decoder rejected (each counted as one lost frame)
    corrupt_frames: int = 0  # frames the decoder flagged as corrupt, skipped
    unreadable_files: list[str] = field(default_factory=list)
    truncated: bool = False
    reconnects: int = 0
    last_good_index: int | None = None
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        logger.warning(message)


class Sampler:
    """Decides which frames to keep: every `stride`-th frame, or about `fps` frames per second.

    fps sampling keeps the first frame of each 1/fps time slot, by timestamp, so the kept rate
    is right for variable frame rate too (and all frames are kept when fps >= the source rate).
    """

    def __init__(self, fps: float | None = None, stride: int = 1):
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if fps is not None and stride != 1:
            raise ValueError("give either fps or stride, not both")
        self.fps, self.stride = fps, stride
        self._last_slot: int | None = None

    def keep(self, index: int, timestamp: float) -> bool:
        """Call once per frame, in order."""
        if self.fps is None:
            return index % self.stride == 0
        slot = math.floor(timestamp * self.fps + 1e-6)
        if self._last_slot is not None and slot <= self._last_slot:
            return False
        self._last_slot = slot
        return True


class FrameSource:
    """An iterator of `Frame`s with `.info` (VideoInfo) and `.report` (SourceReport).

    Use as a context manager or call `close()`.
    """

    name: str
    info: VideoInfo
    report: SourceReport

    def __init__(self) -> None:
        self.report = SourceReport()
        self._frames: Iterator[Frame] | None = None
        self._closed = False

    def _generate(self) -> Iterator[Frame]:
        raise NotImplementedError

    def read_frames(self, indices: Sequence[int]) -> list[Frame]:
        """Random access: the frames at `indices` (finite sources only), in index order."""
        return list(self.iter_frames(indices))

    def iter_frames(self, indices: Sequence[int]) -> Iterator[Frame]:
        """:meth:`read_frames` one frame at a time, each as soon as it is decoded."""
        raise SourceError(f"{self.name}: random access is not possible on a live stream; use streaming windows")

    def frame_shapes(self) -> list[tuple[int, int]]:
        """(H, W) of the frames it gives, as known before reading them (the engine's input size is
        chosen from the median frame's: `CoSalEngine.size_for`)."""
        return [(self.info.height, self.info.width)]

    def __iter__(self) -> FrameSource:
        return self

    def __next__(self) -> Frame:
        if self._closed:
            raise StopIteration
        if self._frames is None:
            self._frames = self._generate()
        frame = next(self._frames)
        self.report.frames_yielded += 1
        self.report.last_good_index = frame.index
        return frame

    def close(self) -> None:
        """Stop reading. From another thread than the one iterating (a prefetcher inside a read),
        the reader stops at its next frame and closes what it opened itself."""
        self._closed = True
        if self._frames is not None:
            with contextlib.suppress(ValueError):  # "generator already executing": it is in another thread
                self._frames.close()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- PyAV helpers


def _upright(frame: av.VideoFrame) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a PyAV frame, rotated by its display matrix."""
    image = frame.to_ndarray(format="rgb24")
    turns = (int(round(frame.rotation / 90)) % 4) if frame.rotation else 0
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def _decode_packets(
    container: av.container.InputContainer, name: str, report: SourceReport
) -> Iterator[av.VideoFrame | None]:
    """Decode the first video stream packet by packet; None stands for a lost frame.

    Rejected packets and frames flagged corrupt are counted in `report` and yielded as None so
    frame indices stay right. Demuxer errors (truncation, dropped connection) propagate.
    """
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.EOFError:
                return
            except av.error.FFmpegError as error:
                report.bad_packets += 1
                logger.debug("%s: bad packet at pts %s: %s", name, packet.pts, error)
                yield None
                continue
            yield from _usable(frames, report)
    except (av.error.FFmpegError, OSError):
        # The demuxer failed (truncated file, dropped connection): the decoder still holds
        # the last frames; drain it before passing the error on.
        try:
            frames = stream.codec_context.decode(None)
        except av.error.FFmpegError:
            frames = []
        for frame in frames:
            frame.time_base = frame.time_base or stream.time_base
        yield from _usable(frames, report)
        raise


def _usable(frames: list[av.VideoFrame], report: SourceReport) -> Iterator[av.VideoFrame | None]:
    for frame in frames:
        if frame.is_corrupt:
            report.corrupt_frames += 1
            yield None
        else:
            yield frame


def _open_container(spec: str, name: str, **kwargs: object) -> av.container.InputContainer:
    try:
        return av.open(spec, mode="r", **kwargs)
    except av.error.FFmpegError as error:
        raise SourceError(
            f"{name}: cannot open as a video ({error}). Check that it is a video file, not truncated "
            "(an MP4 cut before its index was written cannot be read), or re-encode it with ffmpeg."
        ) from error


def _check_video_stream(container: av.container.InputContainer, name: str) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = ", ".join(f"{s.type} {getattr(s.codec_context, 'name', '?')}" for s in container.streams) or "none"
        raise SourceError(f"{name}: has no video stream (streams: {kinds}). Is it an audio-only file?")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise SourceError(
            f"{name}: video stream #{stream.index} uses a codec this FFmpeg build cannot decode. "
            "Re-encode it, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`."
        )
    return stream


def _unbounded_info(container: av.container.InputContainer, name: str) -> VideoInfo:
    """The VideoInfo of a stream without known length (a network stream, a pipe); the container is
    closed when it holds no readable video stream (SourceError)."""
    try:
        stream = _check_video_stream(container, name)
    except SourceError:
        container.close()
        raise
    rate = stream.average_rate or stream.guessed_rate
    return VideoInfo(
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        fps=float(rate) if rate else 0.0,
        frame_count=None,
        duration=None,
        rotation=0,
        codec=stream.codec_context.name,
    )


def _summarise_skips(name: str, report: SourceReport, advice: str) -> None:
    if report.bad_packets or report.corrupt_frames:
        report.warn(
            f"{name}: skipped {report.bad_packets} undecodable packet(s) and {report.corrupt_frames} corrupt "
            f"frame(s); the other frames were read. {advice}"
        )


# ----------------------------------------------------------------------------- video files


class _Timeline:
    """Increasing timestamps for a file whose own go back (clips joined together: each restarts at
    0): from the first frame that goes back, the time continues after the last one (one frame
    interval later). Reports that, and a change of frame size, once each, naming the frame."""

    def __init__(self, name: str, info: VideoInfo, report: SourceReport):
        self.name, self.report = name, report
        self.interval = 1.0 / info.fps if info.fps else 0.04
        self.offset, self.last = 0.0, -math.inf
        self.size: tuple[int, int] | None = None
        self.warned_time = self.warned_size = False

    def __call__(self, index: int, timestamp: float, frame: av.VideoFrame) -> float:
        if timestamp + self.offset <= self.last:
            self.offset = self.last + self.interval - timestamp
            if not self.warned_time:
                self.warned_time = True
                self.report.warn(f"{self.name}: timestamps start again at frame {index} (clips joined together?); "
                                 f"its time continues from {self.last + self.interval:.3f} s")
        self.last = timestamp + self.offset
        size = (frame.width, frame.height)
        if self.size is not None and size != self.size and not self.warned_size:
            self.warned_size = True
            self.report.warn(f"{self.name}: the frame size changes at frame {index} from {self.size[0]}x{self.size[1]} "
                             f"to {size[0]}x{size[1]}; every frame is segmented at its own size")
        self.size = size
        return self.last


class _TimedFrames:
    """Iterates (index, timestamp, frame) over the decodable frames of a container's first video
    stream, timestamps on a :class:`_Timeline`. Indices count lost frames too, so they stay right;
    ``count`` is the number of frames met so far, lost ones included (where a damaged file stopped).
    Demuxer errors propagate, as from :func:`_decode_packets`."""

    def __init__(self, container: av.container.InputContainer, name: str, info: VideoInfo, report: SourceReport):
        self.container, self.name, self.report = container, name, report
        self.timeline = _Timeline(name, info, report)
        self.count = 0

    def __iter__(self) -> Iterator[tuple[int, float, av.VideoFrame]]:
        start_pts = self.container.streams.video[0].start_time or 0
        for frame in _decode_packets(self.container, self.name, self.report):
            index = self.count
            self.count += 1
            if frame is not None and frame.pts is not None:
                yield index, self.timeline(index, float((frame.pts - start_pts) * frame.time_base), frame), frame


class VideoFileSource(FrameSource):
    """A video file, decoded with decord (PyAV when decord cannot); see the module docstring."""

    def __init__(self, path: Path, sampler: Sampler, reader: Reader = "auto", batch_size: int = 16):
        super().__init__()
        self.path, self.name = path, str(path)
        self._sampler, self._batch_size = sampler, batch_size
        if not path.exists():
            raise SourceError(f"{path}: no such file. Check the path.")
        if path.is_dir():
            raise SourceError(f"{path}: is a folder; give a video file, or the folder as an image group.")
        if path.stat().st_size == 0:
            raise SourceError(f"{path}: file is empty (0 bytes). Re-copy or re-record it.")
        self.info = self._probe()
        self._vr = None
        self._timestamps = np.empty(0)  # decord's, of every frame
        if reader != "pyav":
            self._vr = self._open_decord()
            if self._vr is None and reader == "decord":
                raise SourceError(f"{path}: decord cannot open this file; use reader='pyav' or 'auto'.")
        if self._vr is not None and self.info.frame_count is None:
            self.info.frame_count = len(self._vr)

    def _probe(self) -> VideoInfo:
        """Stream metadata plus the rotation of the first frame (PyAV)."""
        with _open_container(self.name, self.name) as container:
            stream = _check_video_stream(container, self.name)
            try:
                first = next((f for f in _decode_packets(container, self.name, SourceReport()) if f is not None), None)
            except av.error.FFmpegError:
                first = None
            if first is None:
                raise SourceError(f"{self.name}: no decodable video frame in the file. Re-encode or re-record it.")
            rotation = int(round(first.rotation or 0)) % 360
            width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
            rate = stream.average_rate or stream.guessed_rate
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            return VideoInfo(
                width=width,
                height=height,
                fps=float(rate) if rate else 0.0,
                frame_count=stream.frames or None,
                duration=duration,
                rotation=rotation,
                codec=stream.codec_context.name,
            )

    def _open_decord(self):  # -> decord.VideoReader | None
        """decord's reader, or None where decord cannot open the file or cannot be trusted with it:
        timestamps that do not increase (clips joined together, e.g. concatenated MPEG-TS: decord
        then gives frames of the first clip's size and duplicate timestamps)."""
        import decord

        try:
            vr = decord.VideoReader(self.name, ctx=decord.cpu(0))
        except Exception as error:  # decord raises RuntimeError or DECORDError
            logger.info("%s: decord cannot open it (%s); reading with PyAV", self.name, str(error).splitlines()[0])
            return None
        self._timestamps = vr.get_frame_timestamp(range(len(vr)))[:, 0].astype(np.float64)
        back = np.flatnonzero(np.diff(self._timestamps) <= 0)
        if back.size:
            logger.info("%s: timestamps do not increase at frame %d (joined clips?); reading with PyAV",
                        self.name, back[0] + 1)
            return None
        return vr

    def _generate(self) -> Iterator[Frame]:
        if self._vr is None:
            yield from self._pyav_frames(start_index=0)
            return
        timestamps = self._timestamps
        count = len(timestamps)
        keep = [i for i in range(count) if self._sampler.keep(i, float(timestamps[i]))]
        for start in range(0, len(keep), self._batch_size):
            chunk = keep[start : start + self._batch_size]
            try:
                images = self._vr.get_batch(chunk).asnumpy()
            except Exception as error:  # decord gives up on the whole batch at a bad packet
                logger.info(
                    "%s: decord failed on frames %d..%d (%s); continuing with PyAV",
                    self.name, chunk[0], chunk[-1], str(error).splitlines()[0][:200],
                )
                self._vr = None
                yield from self._pyav_frames(start_index=chunk[0])
                return
            for index, image in zip(chunk, images):
                yield Frame(image=image, index=index, timestamp=float(timestamps[index]), source=self.name)

    def _pyav_frames(self, start_index: int) -> Iterator[Frame]:
        """Decode with PyAV, yielding sampled frames with index >= start_index."""
        sampler = Sampler(self._sampler.fps, self._sampler.stride)
        last_good = None
        with _open_container(self.name, self.name) as container:
            decoded = _TimedFrames(container, self.name, self.info, self.report)
            try:
                for index, timestamp, frame in decoded:
                    if sampler.keep(index, timestamp) and index >= start_index:
                        yield Frame(image=_upright(frame), index=index, timestamp=timestamp, source=self.name)
                    last_good = (index, timestamp)
                truncated = self.info.frame_count is not None and decoded.count < self.info.frame_count
            except av.error.FFmpegError as error:
                logger.debug("%s: demuxer stopped: %s", self.name, error)
                truncated = True
        if truncated:
            self.report.truncated = True
            where = f"frame {last_good[0]} at {last_good[1]:.3f} s" if last_good else "none"
            expected = f" of {self.info.frame_count} announced" if self.info.frame_count else ""
            self.report.warn(
                f"{self.name}: file is truncated: read {decoded.count}{expected} frames, last good {where}. "
                "The frames before it were read; re-copy or re-record the file to get the rest."
            )
        _summarise_skips(self.name, self.report, "The file is damaged; re-copy or re-encode it.")

    def iter_frames(self, indices: Sequence[int]) -> Iterator[Frame]:
        """Frames at `indices` (sorted, deduplicated), by decord random access or a PyAV pass."""
        wanted = sorted(set(int(i) for i in indices))
        if self._vr is not None:
            try:
                while wanted:  # a frame leaves `wanted` once decoded: PyAV reads only the rest
                    image = self._vr.get_batch(wanted[:1]).asnumpy()[0]
                    index = wanted.pop(0)
                    yield Frame(image=image, index=index, timestamp=float(self._timestamps[index]), source=self.name)
                return
            except Exception as error:
                logger.info("%s: decord random access failed (%s); using PyAV", self.name, str(error).splitlines()[0])
        if not wanted:
            return
        wanted_set = set(wanted)
        with _open_container(self.name, self.name) as container:
            decoded = _TimedFrames(container, self.name, self.info, SourceReport())
            try:
                for index, timestamp, frame in decoded:
                    if index in wanted_set:
                        yield Frame(image=_upright(frame), index=index, timestamp=timestamp, source=self.name)
                    if index >= wanted[-1]:
                        break
            except av.error.FFmpegError as error:
                logger.warning("%s: stopped reading at frame %d: %s", self.name, decoded.count, error)


# ----------------------------------------------------------------------------- pipes


class PipeSource(FrameSource):
    """A pipe or FIFO (`/dev/stdin`, a named pipe an `ffmpeg` writes to), read once, front to back,
    with PyAV as the writer writes: no length and no random access, so it is read in streaming
    mode (every frame, at the engine's pace: a full pipe holds the writer back; or, with `--live`,
    by a live reader at the writer's pace). It ends when the writer closes the pipe. Its format must
    be readable without seeking (e.g. MPEG-TS; not a plain MP4).
    """

    def __init__(self, path: Path, sampler: Sampler):
        super().__init__()
        self.path, self.name = path, str(path)
        self._sampler = sampler
        try:
            waiting = os.open(path, os.O_RDONLY)  # waits for a FIFO's writer here, where a stop signal ends the wait
        except OSError as error:
            raise SourceError(f"{self.name}: cannot open the pipe ({error.strerror}); check its permissions.") from error
        try:
            self._container = _open_container(self.name, self.name)
        finally:
            os.close(waiting)
        self.info = _unbounded_info(self._container, self.name)

    def _generate(self) -> Iterator[Frame]:
        decoded = _TimedFrames(self._container, self.name, self.info, self.report)
        try:
            for index, timestamp, frame in decoded:
                if self._sampler.keep(index, timestamp):
                    yield Frame(image=_upright(frame), index=index, timestamp=timestamp, source=self.name)
        except (av.error.FFmpegError, OSError) as error:
            self.report.truncated = True
            self.report.warn(f"{self.name}: the pipe stopped being readable after frame {decoded.count - 1} ({error}); "
                             "the frames before it were read. Check the program writing to it.")
        finally:
            self._container.close()
        _summarise_skips(self.name, self.report, "The writer sent damaged data.")

    def close(self) -> None:
        if self._frames is None:  # never read: the container is still ours to close
            self._container.close()
        super().close()


def is_pipe(path: Path) -> bool:
    """A FIFO or an anonymous pipe (`/dev/stdin` of `... | streamcosal video /dev/stdin`)."""
    try:
        return stat.S_ISFIFO(path.stat().st_mode)
    except OSError:
        return False


# ----------------------------------------------------------------------------- live streams


@dataclass
class ReconnectPolicy:
    """Exponential backoff: wait backoff_s, 2*backoff_s, ... (at most max_backoff_s) between tries.

    max_attempts: tries after a drop before the stream ends (and, + 1, to connect the first time).
    """

    max_attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0

    def delay(self, attempt: int) -> float:
        return min(self.backoff_s * 2**attempt, self.max_backoff_s)


class _SeenFrames:
    """Digests of the frames a stream delivered, by raw pts (the latest `limit`), so that frames a
    reconnect sends again (a server replaying a file from its start) are recognised."""

    def __init__(self, limit: int = 50_000):
        self._digests: OrderedDict[int, bytes] = OrderedDict()
        self._limit = limit

    @staticmethod
    def digest(frame: av.VideoFrame) -> bytes:
        return hashlib.blake2b(bytes(frame.planes[0]), digest_size=16).digest()

    def get(self, pts: int) -> bytes | None:
        return self._digests.get(pts)

    def add(self, pts: int, digest: bytes) -> None:
        self._digests[pts] = digest
        if len(self._digests) > self._limit:
            self._digests.popitem(last=False)


class StreamSource(FrameSource):
    """A live stream or camera read with PyAV, reconnecting after a drop.

    After a drop (read error, or end of data: a live stream has no end, except HLS which
    reports its own end), it reconnects up to `policy.max_attempts` times with exponential
    backoff; a connection that delivers no new frame counts as a failed try. Frames a
    reconnect sends again (same pts, same pixels: a server replaying a file from its start,
    then stalling) are skipped and are no progress, and the frames after them keep that
    stream's own time. Then iteration stops cleanly with a warning; every frame yielded before
    stays yielded. Frame indices and timestamps keep increasing across reconnects (the outage
    time is added). `close()` ends a backoff wait at once.
    """

    def __init__(
        self,
        url: str,
        sampler: Sampler,
        policy: ReconnectPolicy,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
    ):
        super().__init__()
        self.url, self.name = url, redact(url)  # the real URL only connects
        self._sampler, self._policy = sampler, policy
        self._timeout = (open_timeout_s, read_timeout_s)
        self._eof_is_end = url.split("?")[0].lower().endswith(".m3u8")
        self._failed_tries = 0  # consecutive reconnect tries that brought no new frame
        self._stopped = threading.Event()  # set by close(): ends a backoff wait at once
        container = self._connect(self._policy.max_attempts + 1)
        if container is None:
            raise SourceError(
                f"{self.name}: unreachable after {self._policy.max_attempts + 1} tries "
                f"({self._last_error}). Check the URL, the network and that the stream is running."
            )
        self._container = container
        self.info = _unbounded_info(container, self.name)

    def _connect(self, attempts: int) -> av.container.InputContainer | None:
        self._last_error = ""
        for attempt in range(attempts):
            if attempt and self._stopped.wait(self._policy.delay(attempt - 1)):
                return None
            if self._closed:
                return None
            options = {"rtsp_transport": "tcp"} if self.url.startswith("rtsp") else {}
            fmt = "v4l2" if self.url.startswith("/dev/video") else None
            try:
                return av.open(self.url, mode="r", format=fmt, options=options, timeout=self._timeout)
            except (av.error.HTTPUnauthorizedError, av.error.HTTPForbiddenError) as error:
                raise SourceError(
                    f"{self.name}: the camera refused the login ({error.strerror}); give its user "
                    "and password in the URL (rtsp://USER:PASSWORD@HOST/PATH). Not retried."
                ) from error
            except (av.error.FFmpegError, OSError) as error:
                self._last_error = redact(str(error))
                logger.info("%s: connection try %d/%d failed: %s", self.name, attempt + 1, attempts, self._last_error)
        return None

    def _generate(self) -> Iterator[Frame]:
        index, last_t = 0, None
        interval = 1.0 / self.info.fps if self.info.fps else 0.04
        seen = _SeenFrames()
        timeline: tuple[int, float] | None = None  # (raw pts, stream time) of the current connection's first frame
        container: av.container.InputContainer | None = self._container
        dropped_at: float | None = None
        while container is not None:
            new_frames, ended_cleanly, replay = False, False, False
            connection_timeline = None
            try:
                for frame in _decode_packets(container, self.name, self.report):
                    if frame is None or frame.pts is None:
                        index += 1
                        continue
                    digest = seen.digest(frame)
                    if seen.get(frame.pts) == digest:  # a reconnect sent frames already read: not progress
                        replay = True
                        continue
                    if connection_timeline is None:  # a replay continues its stream's own time
                        connection_timeline = timeline if (replay and timeline) else (
                            frame.pts, 0.0 if last_t is None else last_t + interval + time.monotonic() - (dropped_at or 0))
                        timeline = connection_timeline
                    first_pts, start_t = connection_timeline
                    timestamp = start_t + float((frame.pts - first_pts) * frame.time_base)
                    seen.add(frame.pts, digest)
                    new_frames = True
                    if last_t is None or timestamp > last_t:
                        if self._sampler.keep(index, timestamp):
                            yield Frame(image=_upright(frame), index=index, timestamp=timestamp, source=self.name)
                        last_t = timestamp
                    index += 1
                ended_cleanly = True
            except (av.error.FFmpegError, OSError) as error:
                logger.info("%s: stream dropped after frame %d: %s", self.name, index - 1, redact(str(error)))
            finally:
                container.close()
            if replay and not new_frames:
                logger.info("%s: the connection only sent frames already read", self.name)
            if self._closed or (ended_cleanly and self._eof_is_end):
                break
            dropped_at = time.monotonic()
            container = self._reconnect(had_frames=new_frames)
        _summarise_skips(self.name, self.report, "Frames are lost at drops or on a bad network.")

    def _reconnect(self, had_frames: bool) -> av.container.InputContainer | None:
        """Reconnect; the tries of connections that brought no new frame add up."""
        if had_frames:
            self._failed_tries = 0
        while self._failed_tries < self._policy.max_attempts:
            if self._stopped.wait(self._policy.delay(self._failed_tries)):
                return None
            self._failed_tries += 1
            container = self._connect(1)
            if container is not None:
                self.report.reconnects += 1
                logger.info("%s: reconnected (%d)", self.name, self.report.reconnects)
                return container
        self.report.warn(
            f"{self.name}: stream ended: no new frames after {self._policy.max_attempts} reconnect tries "
            f"({self._last_error or 'no data, or only frames already read'}); "
            f"{self.report.frames_yielded} frames were read and kept."
        )
        return None

    def close(self) -> None:
        self._stopped.set()
        if self._frames is None:  # never read: the first connection is still ours to close
            self._container.close()
        super().close()  # else the reader closes its connection (never closed under a running read)


_URL_PASSWORD = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@'\"]*):[^\s/@'\"]*@")
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pwd|pass)=)[^&\s'\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` (a URL, or a message quoting one) with each password of a URL replaced by ***:
    rtsp://user:***@host/path, http://host/video?user=u&pwd=***. A stream is named this way in
    everything stored or shown (result rows, reports, metric labels, messages, logs); only the
    connection uses the real URL."""
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", text))


# ----------------------------------------------------------------------------- image groups


class ImageGroupSource(FrameSource):
    """Images as one group: a folder (sorted by file name) or a list of files (in the given order).

    Timestamps are NaN (images have no time); fps sampling is refused, stride works.
    Unreadable files are skipped with a warning naming them, and listed in report.unreadable_files.
    """

    def __init__(self, paths: Sequence[Path], name: str, sampler: Sampler):
        super().__init__()
        self.name, self.paths = name, list(paths)
        if sampler.fps is not None:
            raise SourceError(f"{name}: images have no timestamps, so fps sampling is impossible; use stride.")
        self._sampler = sampler
        if not self.paths:
            raise SourceError(f"{name}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}).")
        missing = [str(p) for p in self.paths if not p.is_file()]
        if len(missing) == len(self.paths):
            raise SourceError(f"{name}: image file(s) not found: {', '.join(missing[:5])}. Check the paths.")
        for path in missing:  # e.g. a broken symbolic link in a folder: skipped, said, the group partial
            self.report.unreadable_files.append(path)
            self.report.warn(f"{path}: not found (a broken symbolic link?); skipped.")
        self.paths = [p for p in self.paths if p.is_file()]
        first = None
        for path in self.paths:
            with contextlib.suppress(ImageReadError):
                first, _ = read_image(path)
                break
        if first is None:
            raise SourceError(f"{name}: none of the {len(self.paths)} images can be read. Are they images?")
        self.info = VideoInfo(
            width=first.shape[1], height=first.shape[0], fps=0.0, frame_count=len(self.paths),
            duration=None, rotation=0, codec="image",
        )

    def frame_shapes(self) -> list[tuple[int, int]]:
        """Every image's (H, W) from its header (images differ in size)."""
        return image_sizes(self.paths)

    def _read(self, index: int) -> Frame | None:
        path = self.paths[index]
        try:
            image, _ = read_image(path)
        except ImageReadError as err:
            self.report.unreadable_files.append(str(path))
            self.report.warn(f"{err}; skipped.")
            return None
        return Frame(image=image, index=index, timestamp=math.nan, source=str(path))

    def _generate(self) -> Iterator[Frame]:
        for index in range(len(self.paths)):
            if self._sampler.keep(index, math.nan):
                frame = self._read(index)
                if frame is not None:
                    yield frame

    def iter_frames(self, indices: Sequence[int]) -> Iterator[Frame]:
        for index in sorted(set(int(i) for i in indices)):
            frame = self._read(index)
            if frame is not None:
                yield frame


# ----------------------------------------------------------------------------- entry point


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
    if text.lower().startswith(STREAM_PREFIXES) or text.startswith("/dev/video"):
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
