"""Windows: the groups of frames the engine segments together.

Two modes:

- global (archived videos): the consensus comes from `sample_consensus_frames(source, n)`,
  n frames evenly spaced over the WHOLE video (random access); then every sampled frame is
  segmented against it in `global_windows(frames, window)`: consecutive, non-overlapping
  windows (the last one may be shorter). Every frame of every window is emitted.
- streaming (live): `streaming_windows(frames, window, stride)`: windows of `window` frames
  every `stride` new frames (stride < window = overlap); the caller keeps a running consensus.
  A frame's result counts from the FIRST window that contains it (lowest latency: its result
  is final as soon as that window is segmented); `Window.emit` marks those frames. At the end
  of the stream, frames not emitted yet come in a last window padded with the latest
  already-emitted frames (emit False), so the window keeps its size when the stream allows.

`interleave(sources, frames_per_source)` merges several sources (cameras that should see the
same object) into windows holding frames of every source, ordered by timestamp.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from streamcosal.io.frame import Frame, FrameSource, SourceError
from streamcosal.params import CPU_WINDOW, GPU_WINDOW

logger = logging.getLogger(__name__)


def frames_per_window(asked: int | None, step: int | None, device: torch.device, live: bool) -> int:
    """A run's window: ``asked``, else `GPU_WINDOW` for files on a GPU and `CPU_WINDOW` otherwise (a live
    run's windows wait for their frames: larger ones add latency), or ``step`` (a streaming run's new frames
    per window) where that is larger."""
    return asked or max(GPU_WINDOW if device.type != "cpu" and not live else CPU_WINDOW, step or 1)


@dataclass
class Window:
    """A group of frames segmented together.

    index: 0, 1, 2, ... in the order windows are made.
    frames: the frames, each image (H, W, 3) uint8 RGB (sizes may differ across sources).
    emit: emit[i] is True when the result of frames[i] counts (False: context only).
    """

    index: int
    frames: list[Frame]
    emit: list[bool]

    @property
    def sources(self) -> list[str]:
        """The distinct sources of the frames, in order of first appearance."""
        return list(dict.fromkeys(f.source for f in self.frames))

    @property
    def emitted(self) -> list[Frame]:
        return [f for f, e in zip(self.frames, self.emit) if e]

    def __len__(self) -> int:
        return len(self.frames)


def _check_size(window: int, stride: int | None = None) -> int:
    if window < 1:
        raise ValueError(f"window must be >= 1 frame, got {window}")
    stride = window if stride is None else stride
    if not 1 <= stride <= window:
        raise ValueError(f"stride must be in 1..window ({window}), got {stride}")
    return stride


def sample_consensus_frames(source: FrameSource, n: int) -> list[Frame]:
    """n frames evenly spaced over the whole finite source (fewer if it has fewer frames).

    Uses random access (decord for videos). Raises SourceError for live streams.
    """
    indices = consensus_frame_indices(source, n)
    return source.read_frames(indices)


def consensus_frame_indices(source: FrameSource, n: int) -> list[int]:
    """The indices of :func:`sample_consensus_frames`; SourceError for live streams."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    count = source.info.frame_count
    if not count:
        raise SourceError(
            f"{source.name}: frame count unknown (live stream?), so frames cannot be sampled over the "
            "whole source; use streaming windows with a running consensus."
        )
    return np.unique(np.linspace(0, count - 1, num=min(n, count)).round().astype(int)).tolist()


def global_windows(frames: Iterable[Frame], window: int) -> Iterator[Window]:
    """Consecutive non-overlapping windows of `window` frames; the last may be shorter."""
    _check_size(window)
    batch: list[Frame] = []
    index = 0
    for frame in frames:
        batch.append(frame)
        if len(batch) == window:
            yield Window(index=index, frames=batch, emit=[True] * len(batch))
            batch, index = [], index + 1
    if batch:
        yield Window(index=index, frames=batch, emit=[True] * len(batch))


def streaming_windows(frames: Iterable[Frame], window: int, stride: int | None = None) -> Iterator[Window]:
    """Windows of `window` frames, one every `stride` new frames (see module docstring).

    Each frame is emitted exactly once, in the first window that holds it.
    """
    stride = _check_size(window, stride)
    buffer: deque[Frame] = deque(maxlen=window)
    new, index = 0, 0
    for frame in frames:
        buffer.append(frame)
        new += 1
        if len(buffer) == window and new >= stride:
            yield Window(index=index, frames=list(buffer), emit=[i >= window - new for i in range(window)])
            new, index = 0, index + 1
    if new:
        size = len(buffer)
        yield Window(index=index, frames=list(buffer), emit=[i >= size - new for i in range(size)])


def interleave(sources: Sequence[Iterable[Frame]], frames_per_source: int) -> Iterator[Window]:
    """Windows holding `frames_per_source` consecutive frames of every source, by timestamp.

    Within a window frames are sorted by timestamp (ties keep source order); when a frame has no
    timestamp (NaN, images) the window is round-robin: frame 0 of each source, then frame 1, ...
    Sources should be sampled at the same fps (open_source(fps=...)) so windows stay aligned in
    time. When a source ends, the others go on (a warning names it); every frame is emitted.
    """
    if frames_per_source < 1:
        raise ValueError(f"frames_per_source must be >= 1, got {frames_per_source}")
    iterators = [iter(s) for s in sources]
    names = [getattr(s, "name", f"source {i}") for i, s in enumerate(sources)]
    live = list(range(len(iterators)))
    index = 0
    while live:
        per_source: list[list[Frame]] = []
        for k in list(live):
            taken = []
            for _ in range(frames_per_source):
                frame = next(iterators[k], None)
                if frame is None:
                    live.remove(k)
                    if live:
                        logger.warning("%s: ended; interleaving goes on with the other sources", names[k])
                    break
                taken.append(frame)
            if taken:
                per_source.append(taken)
        if not per_source:
            return
        round_robin = [g[i] for i in range(frames_per_source) for g in per_source if i < len(g)]
        if any(math.isnan(f.timestamp) for f in round_robin):
            ordered = round_robin
        else:
            ordered = sorted(round_robin, key=lambda f: f.timestamp)
        yield Window(index=index, frames=ordered, emit=[True] * len(ordered))
        index += 1
