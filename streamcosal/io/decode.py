"""PyAV decoding shared by the readers: upright frames (rotated by `VideoFrame.rotation`), packet-by-
packet decoding that skips and counts bad packets, opening a container with a clear error, and exact
timestamps `(pts - stream.start_time) * time_base`, so variable frame rate is right."""

from __future__ import annotations

import logging
import math
from typing import Iterator

import av
import numpy as np

from streamcosal.io.frame import SourceError, SourceReport, VideoInfo

logger = logging.getLogger(__name__)


def upright(frame: av.VideoFrame) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a PyAV frame, rotated by its display matrix."""
    image = frame.to_ndarray(format="rgb24")
    turns = (int(round(frame.rotation / 90)) % 4) if frame.rotation else 0
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def decode_packets(
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
            yield from usable_frames(frames, report)
    except (av.error.FFmpegError, OSError):
        # The demuxer failed (truncated file, dropped connection): the decoder still holds
        # the last frames; drain it before passing the error on.
        try:
            frames = stream.codec_context.decode(None)
        except av.error.FFmpegError:
            frames = []
        for frame in frames:
            frame.time_base = frame.time_base or stream.time_base
        yield from usable_frames(frames, report)
        raise


def usable_frames(frames: list[av.VideoFrame], report: SourceReport) -> Iterator[av.VideoFrame | None]:
    for frame in frames:
        if frame.is_corrupt:
            report.corrupt_frames += 1
            yield None
        else:
            yield frame


def open_container(spec: str, name: str, **kwargs: object) -> av.container.InputContainer:
    try:
        return av.open(spec, mode="r", **kwargs)
    except av.error.FFmpegError as error:
        raise SourceError(
            f"{name}: cannot open as a video ({error}). Check that it is a video file, not truncated "
            "(an MP4 cut before its index was written cannot be read), or re-encode it with ffmpeg."
        ) from error


def check_video_stream(container: av.container.InputContainer, name: str) -> av.video.stream.VideoStream:
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


def unbounded_info(container: av.container.InputContainer, name: str) -> VideoInfo:
    """The VideoInfo of a stream without known length (a network stream, a pipe); the container is
    closed when it holds no readable video stream (SourceError)."""
    try:
        stream = check_video_stream(container, name)
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


def summarise_skips(name: str, report: SourceReport, advice: str) -> None:
    if report.bad_packets or report.corrupt_frames:
        report.warn(
            f"{name}: skipped {report.bad_packets} undecodable packet(s) and {report.corrupt_frames} corrupt "
            f"frame(s); the other frames were read. {advice}"
        )


# ----------------------------------------------------------------------------- video files


class Timeline:
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


class TimedFrames:
    """Iterates (index, timestamp, frame) over the decodable frames of a container's first video
    stream, timestamps on a :class:`Timeline`. Indices count lost frames too, so they stay right;
    ``count`` is the number of frames met so far, lost ones included (where a damaged file stopped).
    Demuxer errors propagate, as from :func:`decode_packets`."""

    def __init__(self, container: av.container.InputContainer, name: str, info: VideoInfo, report: SourceReport):
        self.container, self.name, self.report = container, name, report
        self.timeline = Timeline(name, info, report)
        self.count = 0

    def __iter__(self) -> Iterator[tuple[int, float, av.VideoFrame]]:
        start_pts = self.container.streams.video[0].start_time or 0
        for frame in decode_packets(self.container, self.name, self.report):
            index = self.count
            self.count += 1
            if frame is not None and frame.pts is not None:
                yield index, self.timeline(index, float((frame.pts - start_pts) * frame.time_base), frame), frame
