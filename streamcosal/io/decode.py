"""PyAV decoding shared by the readers: upright frames (rotated by `VideoFrame.rotation`), packet-by-
packet decoding that skips and counts bad packets, opening a container with a clear error, and exact
timestamps `(pts - stream.start_time) * time_base`, so variable frame rate is right. A frame rate a
container claims that cannot be right (none, or above 1,000 frames/s: variable frame rate files often
say so) is replaced by its timestamps' own (:func:`plausible_rate`)."""

from __future__ import annotations

import logging
import math
from typing import Iterator, Sequence

import av
import numpy as np
from av.stream import Disposition

from streamcosal.io.frame import SourceError, SourceReport, VideoInfo

logger = logging.getLogger(__name__)

MAX_PLAUSIBLE_FPS = 1000.0
"""A container that claims more frames per second than this (or none) has its rate replaced by its
timestamps' (:func:`plausible_rate`)."""
RATE_SAMPLE = 16
"""The first frames whose timestamps' spacing gives the rate of such a container."""


def plausible_rate(claimed: float, timestamps: Sequence[float], name: str, report: SourceReport) -> float:
    """``claimed`` (frames/s) where it is plausible, in (0, ``MAX_PLAUSIBLE_FPS``]; else the rate of the
    timestamps' own spacing (seconds of the first frames: 1 / their median difference), with a warning
    naming the source; 0.0 (unknown) when the timestamps are implausible too.

    The rate is what a reader tells the live readers (drop-policy stride, window sizing) and the overlay
    video; frames are sampled (``--fps``) and timed by their own timestamps either way."""
    if 0 < claimed <= MAX_PLAUSIBLE_FPS:
        return claimed
    times = np.asarray(timestamps[:RATE_SAMPLE], dtype=np.float64)
    steps = np.diff(times[np.isfinite(times)])
    steps = steps[steps > 0]
    spacing = float(np.median(steps)) if steps.size else 0.0
    claim = f"claims {claimed:,.0f} frames/s" if claimed > 0 else "claims no frame rate"
    if spacing > 0 and 1.0 / spacing <= MAX_PLAUSIBLE_FPS:
        rate = 1.0 / spacing
        report.warn(f"{name}: the container {claim}, which cannot be right (variable frame rate?); using "
                    f"{rate:.4g} frames/s, the spacing of its first {steps.size + 1} frames' timestamps "
                    f"(median {spacing * 1000:.4g} ms)")
        return rate
    what = f"{spacing * 1000:.3g} ms apart" if spacing > 0 else "too few to tell"
    report.warn(f"{name}: the container {claim}, and its first frames' timestamps are {what}: its frame rate "
                "is unknown. --fps sampling follows those timestamps; sample with --stride instead, or re-encode "
                "it with a frame rate (ffmpeg -i IN -r 25 OUT.mp4)")
    return 0.0


def upright(frame: av.VideoFrame) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a PyAV frame, rotated by its display matrix."""
    image = frame.to_ndarray(format="rgb24")
    turns = (int(round(frame.rotation / 90)) % 4) if frame.rotation else 0
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def decode_packets(
    container: av.container.InputContainer, name: str, report: SourceReport
) -> Iterator[av.VideoFrame | None]:
    """Decode the container's video (:func:`video_stream`) packet by packet; None stands for a lost frame.

    Rejected packets and frames flagged corrupt are counted in `report` and yielded as None so
    frame indices stay right. Demuxer errors (truncation, dropped connection) propagate.
    """
    stream = video_stream(container)
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


STILL = Disposition.attached_pic | Disposition.timed_thumbnails
"""Video streams that are pictures beside the content, not the video: cover art (an audio file's too),
thumbnails."""


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The container's video: FFmpeg's best video stream (``av_find_best_stream``: the default, more
    than one frame, the highest bit rate) among those that are not pictures (:data:`STILL`); None when
    there is none. Not simply the first: a cover picture or a one-frame stream can come before it."""
    moving = [s for s in container.streams.video if not s.disposition & STILL]
    if len(moving) < 2:
        return moving[0] if moving else None
    best = container.streams.best("video")
    return best if best in moving else moving[0]


def check_video_stream(container: av.container.InputContainer, name: str) -> av.video.stream.VideoStream:
    stream = video_stream(container)
    if stream is None:
        kinds = ", ".join(f"{s.type} {getattr(s.codec_context, 'name', '?')}"
                          + (" (a picture: cover art or thumbnail)" if s.type == "video" else "")
                          for s in container.streams) or "none"
        raise SourceError(f"{name}: has no video stream (streams: {kinds}). Is it an audio-only file?")
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


UNTIMED_FORMATS = {"avi"}
"""Containers (FFmpeg's names) whose frames carry no presentation time: AVI stores one frame per
interval, and PyAV's times of its B-frames come in decoding order. Their frames are timed by their
index and the frame rate, as are frames without any time (a raw H.264 or HEVC stream)."""


class Timeline:
    """Increasing timestamps for a file whose own go back (clips joined together: each restarts at
    0): from the first frame that goes back, the time continues after the last one (one frame
    interval later). A frame without a time (``None``) comes one interval per index after the last.
    Reports times that go back or repeat, and a change of frame size, once each, naming the frame."""

    def __init__(self, name: str, info: VideoInfo, report: SourceReport):
        self.name, self.report = name, report
        self.interval = 1.0 / info.fps if info.fps else 0.04
        self.offset, self.last, self.last_index = 0.0, -math.inf, -1
        self.size: tuple[int, int] | None = None
        self.warned_time = self.warned_repeat = self.warned_size = False

    def __call__(self, index: int, timestamp: float | None, frame: av.VideoFrame) -> float:
        if timestamp is None:
            self.last = index * self.interval if self.last == -math.inf else (
                self.last + (index - self.last_index) * self.interval)
        else:
            if timestamp + self.offset < self.last:
                self.offset = self.last + self.interval - timestamp
                if not self.warned_time:
                    self.warned_time = True
                    self.report.warn(f"{self.name}: timestamps start again at frame {index} (clips joined "
                                     f"together?); its time continues from {self.last + self.interval:.3f} s")
            elif timestamp + self.offset == self.last and not self.warned_repeat:
                self.warned_repeat = True
                self.report.warn(f"{self.name}: frame {index} repeats the timestamp of the frame before "
                                 f"({self.last:.3f} s); the file's times are kept")
            self.last = timestamp + self.offset
        self.last_index = index
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

    def __init__(self, container: av.container.InputContainer, name: str, info: VideoInfo, report: SourceReport,
                 check_rate: bool = True):
        self.container, self.name, self.report, self.info = container, name, report, info
        self.timeline = Timeline(name, info, report)
        self.count = 0
        self.check_rate = check_rate  # False where the reader checked info.fps itself (files)

    def __iter__(self) -> Iterator[tuple[int, float, av.VideoFrame]]:
        start_pts = video_stream(self.container).start_time or 0
        rate = RateCheck(self.info if self.check_rate else None, self.name, self.report)
        timed = not set(self.container.format.name.split(",")) & UNTIMED_FORMATS
        for frame in decode_packets(self.container, self.name, self.report):
            index = self.count
            self.count += 1
            if frame is not None:
                pts = frame.pts if timed else None
                timestamp = self.timeline(index, None if pts is None else float((pts - start_pts) * frame.time_base),
                                          frame)
                if rate.add(timestamp):
                    self.timeline.interval = 1.0 / self.info.fps if self.info.fps else self.timeline.interval
                yield index, timestamp, frame
        rate.finish()


class RateCheck:
    """For a source read as it comes (a pipe, a stream): where ``info.fps`` is implausible, it becomes the
    first ``RATE_SAMPLE`` timestamps' rate once they are read (at the end, for a shorter source), by
    :func:`plausible_rate`; nothing to do for a plausible rate."""

    def __init__(self, info: VideoInfo | None, name: str, report: SourceReport):
        self.info, self.name, self.report = info, name, report
        self.times: list[float] | None = None if info is None or 0 < info.fps <= MAX_PLAUSIBLE_FPS else []

    def add(self, timestamp: float) -> bool:
        """Count a frame's timestamp; True when this one fixed ``info.fps``."""
        if self.times is None:
            return False
        self.times.append(timestamp)
        return len(self.times) >= RATE_SAMPLE and self.finish()

    def finish(self) -> bool:
        if not self.times or self.info is None:
            return False
        self.info.fps = plausible_rate(self.info.fps, self.times, self.name, self.report)
        self.times = None
        return True
