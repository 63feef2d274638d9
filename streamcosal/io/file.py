"""Video files: decoded with decord (`VideoReader.get_batch` on the sampled indices, timestamps from
`get_frame_timestamp`) where the container has an index and decord's first frame is FFmpeg's; PyAV
reads every other file (MPEG-TS: decord misreads it) and takes over for anything decord cannot open
(e.g. a truncated MP4) or fails on while decoding (corrupt packets make decord raise for the whole
batch): PyAV decodes packet by packet, skipping and counting bad ones. Both readers return upright frames: decord 0.6.0 applies
the display matrix itself. decord timestamps are float32 frame start times (error below 1 ms even
for hours-long videos), put back on the stream's clock: each rounded to the nearest tick of the
stream's time base, which gives PyAV's exact times (0.1 s, not 0.10000000149011612) wherever float32
is finer than a tick.

With ``reader="nvdec"`` the frames are decoded by the GPU's NVDEC through PyAV (:mod:`streamcosal.io.nvdec`;
exact timestamps, as PyAV's): where NVDEC cannot run the file is read as with ``"auto"``, and where it
fails on a frame the CPU decodes the file from that frame on (said once, in the source's report).
`VideoFileSource.decoder` says which ran."""

from __future__ import annotations

import itertools
import logging
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Literal, Sequence

import av
import numpy as np

from streamcosal.io.decode import (
    MAX_PLAUSIBLE_FPS,
    RATE_SAMPLE,
    TimedFrames,
    check_video_stream,
    decode_packets,
    open_container,
    plausible_rate,
    summarise_skips,
    upright,
)
from streamcosal.io.frame import Frame, FrameSource, Sampler, SourceError, SourceReport, VideoInfo
from streamcosal.io.nvdec import NvdecUnavailable, open_nvdec

logger = logging.getLogger(__name__)


Reader = Literal["auto", "decord", "pyav", "nvdec"]
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".ts", ".mts", ".mpg", ".mpeg", ".flv",
                  ".wmv", ".3gp"}
"""What a folder's video files end with (an archive's, a folder given where images are expected)."""
INDEXED_FORMATS = {"mov", "mp4", "matroska", "webm"}
"""Containers (FFmpeg's names) whose index decord seeks by. Without one (MPEG-TS, MPEG-PS, raw H.264)
decord 0.6.0 guesses frames by position and is wrong without a word: MPEG-TS with B-frames starts a
GOP late, every frame shifted; a recording cut inside a GOP gets the undecodable frames' slots as
copies of its last frame, every timestamp early. PyAV decodes them in order. AVI has an index, but no
frame times decord can give (huge negative ones with B-frames): PyAV reads it too."""
SHORT_END_S = 1.0
"""A file's frames ending more than this (or 5% of its duration, if more) before the duration its
container announces were cut short."""
FIRST_FRAME_TOLERANCE = 1.0
"""Mean absolute difference (0-255 levels) allowed between decord's frame 0 and PyAV's: both decode with
FFmpeg, equal to the bit for 8-bit video (0.26 for 10-bit, converted to RGB differently); a wrong frame
differs by tens."""


class VideoFileSource(FrameSource):
    """A video file, decoded with decord (PyAV when decord cannot); see the module docstring."""

    def __init__(self, path: Path, sampler: Sampler, reader: Reader = "auto", batch_size: int = 16):
        super().__init__()
        self.path, self.name = path, str(path)
        self._sampler, self._batch_size = sampler, batch_size
        self._nvdec = reader == "nvdec"
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
                raise SourceError(f"{path}: decord cannot open this file or misreads it (the log says why); use "
                                  "reader='pyav' or 'auto'.")
        self._first_image = None  # only decord's check needs it
        if self._vr is not None and self.info.frame_count is None:
            self.info.frame_count = len(self._vr)
        if not 0 < self.info.fps <= MAX_PLAUSIBLE_FPS:  # none, or e.g. 30,000 (variable frame rate)
            times = self._timestamps[:RATE_SAMPLE] if self._vr is not None else self._first_timestamps
            self.info.fps = plausible_rate(self.info.fps, list(times), self.name, self.report)

    def _probe(self) -> VideoInfo:
        """Stream metadata plus the rotation of the first frame (PyAV)."""
        with open_container(self.name, self.name) as container:
            stream = check_video_stream(container, self.name)
            self._indexed = bool(set(container.format.name.split(",")) & INDEXED_FORMATS)
            self._time_base = stream.time_base
            frames = (f for f in decode_packets(container, self.name, SourceReport()) if f is not None)
            try:
                first = next(frames, None)
            except av.error.FFmpegError:
                first = None
            if first is None:
                raise SourceError(f"{self.name}: no decodable video frame in the file. Re-encode or re-record it.")
            self._first_image = upright(first)  # what decord's frame 0 must be, and when
            self._first_size = (first.width, first.height)
            self._first_time = None if first.pts is None else float((first.pts - (stream.start_time or 0))
                                                                    * first.time_base)
            rotation = int(round(first.rotation or 0)) % 360
            width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
            rate = stream.average_rate or stream.guessed_rate
            self._first_timestamps: list[float] = []  # an implausible rate is replaced by these frames' own
            if not 0 < float(rate or 0) <= MAX_PLAUSIBLE_FPS:
                start = stream.start_time or 0
                try:
                    for frame in itertools.chain([first], itertools.islice(frames, RATE_SAMPLE - 1)):
                        if frame.pts is not None:
                            self._first_timestamps.append(float((frame.pts - start) * frame.time_base))
                except av.error.FFmpegError:  # a damaged file: the timestamps read so far
                    pass
            duration = _tagged_duration(stream.metadata.get("DURATION"))  # MKV/WebM: the stream's own
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif duration is None and container.duration is not None:
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
        """decord's reader, or None where decord cannot open the file or cannot be trusted with it: a
        container without an index (:data:`INDEXED_FORMATS`), timestamps that do not increase (clips
        joined together: decord then gives frames of the first clip's size and duplicate timestamps), or
        a first frame that is not FFmpeg's (an edit list or a late start it misreads)."""
        import decord

        if not self._indexed:
            logger.info("%s: a container without an index; reading with PyAV", self.name)
            return None
        try:
            vr = decord.VideoReader(self.name, ctx=decord.cpu(0))
        except Exception as error:  # decord raises RuntimeError or DECORDError
            logger.info("%s: decord cannot open it (%s); reading with PyAV", self.name, str(error).splitlines()[0])
            return None
        self._timestamps = on_ticks(vr.get_frame_timestamp(range(len(vr)))[:, 0], self._time_base)
        back = np.flatnonzero(np.diff(self._timestamps) <= 0)
        if back.size:
            logger.info("%s: timestamps do not increase at frame %d (joined clips?); reading with PyAV",
                        self.name, back[0] + 1)
            return None
        try:
            first = vr.get_batch([0]).asnumpy()[0]
        except Exception as error:
            logger.info("%s: decord cannot decode frame 0 (%s); reading with PyAV", self.name,
                        str(error).splitlines()[0])
            return None
        expected = self._first_image
        if first.shape != expected.shape or np.abs(first.astype(np.int16) - expected).mean() > FIRST_FRAME_TOLERANCE:
            logger.info("%s: decord's frame 0 is not the file's first frame; reading with PyAV", self.name)
            return None
        interval = 1.0 / self.info.fps if 0 < self.info.fps <= MAX_PLAUSIBLE_FPS else 0.0
        if self._first_time is not None and abs(self._timestamps[0] - self._first_time) > max(interval / 2, 1e-3):
            # a recording started inside a GOP: decord's first decodable frame at time 0, every time early and
            # the undecodable frames' slots filled with copies of the last frame
            logger.info("%s: decord's frame 0 is at %.3f s, the file's first frame at %.3f s; reading with PyAV",
                        self.name, self._timestamps[0], self._first_time)
            return None
        last = self._last_keyframe_size()
        if last is not None and last != self._first_size:  # decord scales every frame to the first one's size
            logger.info("%s: its frames are %dx%d at the start and %dx%d at the end; reading with PyAV", self.name,
                        *self._first_size, *last)
            return None
        return vr

    def _last_keyframe_size(self) -> tuple[int, int] | None:
        """(width, height) of the file's last keyframe (where a stream can change its frame size), read by
        PyAV after a seek to the end; None where it cannot be had."""
        try:
            with open_container(self.name, self.name) as container:
                check_video_stream(container, self.name)
                if container.duration is None:
                    return None
                container.seek((container.start_time or 0) + container.duration, backward=True)  # in av.time_base
                frame = next((f for f in decode_packets(container, self.name, SourceReport()) if f is not None), None)
                return None if frame is None else (frame.width, frame.height)
        except (SourceError, av.error.FFmpegError, OSError):
            return None

    def _generate(self) -> Iterator[Frame]:
        self._last_time: float | None = None  # the last decoded frame's timestamp, sampled or not
        try:
            yield from self._decoded()
            self._check_end()
        finally:  # read to the end, or closed: decord's reader holds the file open until it is dropped
            self._vr = None

    def _check_end(self) -> None:
        """A file whose frames end well before the duration its container announces was cut short (an
        interrupted recording or copy, in a format without a frame count: MKV, fragmented MP4, MPEG-TS):
        partial, and said."""
        duration, last = self.info.duration, self._last_time
        if self.report.truncated or not duration or last is None:
            return
        end = last + (1.0 / self.info.fps if self.info.fps else 0.0)
        if duration - end > max(SHORT_END_S, 0.05 * duration):
            self.report.truncated = True
            self.report.warn(f"{self.name}: its frames end at {end:.2f} s of the {duration:.2f} s its container "
                             "announces: cut short (an interrupted recording or copy). The frames read were "
                             "processed; re-copy or re-record the file to get the rest.")

    def _decoded(self) -> Iterator[Frame]:
        if self._nvdec:
            start = yield from self._nvdec_frames()
            if start is None:
                return
            if start > 0:  # NVDEC stopped: the rest on the CPU
                yield from self._pyav_frames(start_index=start)
                return
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
        self._last_time = float(timestamps[-1]) if count else None

    def _nvdec_frames(self) -> Iterator[Frame]:
        """Frames decoded by NVDEC; returns None when it decoded the whole file, else the index of the first
        frame the CPU must decode: 0 where NVDEC cannot run, the frame it rejected, or where the file ended
        early or its demuxer failed (the CPU reader then reports the damage, as without NVDEC)."""
        sampler = Sampler(self._sampler.fps, self._sampler.stride)
        rejected = SourceReport()  # NVDEC's: the CPU decodes from the first and counts what is really damaged
        start = 0
        try:
            with open_nvdec(self.name) as container:
                self.decoder = "nvdec"
                decoded = TimedFrames(container, self.name, self.info, rejected, check_rate=False)
                for index, timestamp, frame in decoded:
                    if rejected.bad_packets or rejected.corrupt_frames:
                        self.report.warn(f"{self.name}: NVDEC could not decode frame {start}: the CPU decodes the "
                                         "file from there (the frames before it came from NVDEC)")
                        break
                    image = upright(frame)
                    start, self._last_time = index + 1, timestamp
                    if sampler.keep(index, timestamp):
                        yield Frame(image=image, index=index, timestamp=timestamp, source=self.name)
                else:
                    if self.info.frame_count is None or decoded.count >= self.info.frame_count:
                        return None
        except NvdecUnavailable as error:
            self.decoder = f"cpu (NVDEC unavailable: {error})"
            return 0
        except (av.error.FFmpegError, OSError) as error:
            logger.info("%s: NVDEC's reading stopped at frame %d (%s); the CPU reads on", self.name, start, error)
        self.decoder = f"nvdec, then the CPU from frame {start}" if start else "cpu"
        return start

    def _pyav_frames(self, start_index: int) -> Iterator[Frame]:
        """Decode with PyAV, yielding sampled frames with index >= start_index."""
        sampler = Sampler(self._sampler.fps, self._sampler.stride)
        last_good = None
        with open_container(self.name, self.name) as container:
            decoded = TimedFrames(container, self.name, self.info, self.report, check_rate=False)
            try:
                for index, timestamp, frame in decoded:
                    if sampler.keep(index, timestamp) and index >= start_index:
                        yield Frame(image=upright(frame), index=index, timestamp=timestamp, source=self.name)
                    last_good = (index, timestamp)
                    self._last_time = timestamp
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
        summarise_skips(self.name, self.report, "The file is damaged; re-copy or re-encode it.")

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
        with open_container(self.name, self.name) as container:
            decoded = TimedFrames(container, self.name, self.info, SourceReport(), check_rate=False)
            try:
                for index, timestamp, frame in decoded:
                    if index in wanted_set:
                        yield Frame(image=upright(frame), index=index, timestamp=timestamp, source=self.name)
                    if index >= wanted[-1]:
                        break
            except av.error.FFmpegError as error:
                logger.warning("%s: stopped reading at frame %d: %s", self.name, decoded.count, error)


def _tagged_duration(tag: str | None) -> float | None:
    """A DURATION tag (HH:MM:SS.nnnnnnnnn, as Matroska writes per stream) in seconds; None if absent or unreadable."""
    try:
        hours, minutes, seconds = (tag or "").split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def on_ticks(seconds: np.ndarray, time_base: Fraction | None) -> np.ndarray:
    """Float32 seconds [N] -> float64 seconds [N], each the nearest multiple of ``time_base`` (as PyAV's
    ``pts * time_base``: ticks * numerator / denominator, correctly rounded); as they are without one."""
    if not time_base:
        return seconds.astype(np.float64)
    ticks = np.round(seconds.astype(np.float64) / float(time_base))
    return ticks * time_base.numerator / time_base.denominator
