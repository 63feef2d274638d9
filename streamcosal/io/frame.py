"""Frames and frame sources: what every reader yields (`Frame`, `VideoInfo`, `SourceReport`), the
`Sampler` that picks frames by stride or rate, and the `FrameSource` base class.

Every source counts what it skipped in `source.report` (`SourceReport`) and logs a warning
naming the file/URL and frame; errors a user must fix raise `SourceError`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

logger = logging.getLogger(__name__)


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
    decoder: str = "cpu"  # what decoded the frames (`VideoFileSource`: NVDEC where asked and it ran)

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
            if self._frames is not None:  # closed from another thread: the reader's files are closed here
                with contextlib.suppress(ValueError):
                    self._frames.close()
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
