"""Events as the frames come: the rules of :func:`streamcosal.storage.events.detect_events`, applied one
frame at a time, so that a live source's events are known (final) while it runs.

    tracker = EventTracker(run_id, source, group, threshold=0.02, min_duration=0.5, max_gap=0.5)
    for frame in frames:                          # one (source, group), in time order
        event = tracker.add(frame.frame_index, frame.timestamp, frame.area_fraction, frame.image, frame.mask)
        if event is not None: ...                 # final: no later frame can change it
    event = tracker.finish()                      # the source ended: the event still open, if long enough

The rules are detect_events' (a frame is present at ``area >= threshold``; two runs of present frames
merge when the absence between them, ``t(next present) - t(frame after the last present)``, is at most
``max(max_gap, interval)``; events covering less than ``min_duration`` are dropped). An open event is
final at the first frame whose time is more than ``max(max_gap, interval)`` past the frame after its
last present one: every later present frame is further away. The one difference: ``interval`` (the
median time between frames) is taken over the source's last `SPACING_FRAMES` frames so far, not over
the whole series, which is not known yet. For a file of constant frame rate (also with ``--fps`` or
``--stride``) and a steady camera this is the same number, and the events are the stored ones; a
variable frame rate can move an event's end by a bridged gap.

An open event keeps its peak frame (the first frame of its largest area: image and mask, by
reference) and, with ``clip_frame``, what that makes of each of its frames (at most
`CLIP_MAX_FRAMES`, the first ones).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from streamcosal.run.observers import EventRecord
from streamcosal.storage.events import Event

SPACING_FRAMES = 64  # the interval is the median time between the last this many frames
CLIP_MAX_FRAMES = 300  # an event's clip keeps its first this many frames (12 s at 25 fps)
EPS = 1e-9  # detect_events' tolerance on times


@dataclass
class _Open:
    """An event being followed: its present frames so far and the absent ones after the last of them."""

    first_frame: int
    first_t: float
    last_frame: int
    last_t: float
    peak_area: float
    peak_frame: int
    peak_t: float
    peak_image: np.ndarray
    peak_mask: np.ndarray
    area_sum: float  # over first..last present, bridged absent frames included
    n: int
    clip: list[tuple[float, bytes]] = field(default_factory=list)
    clip_at_last: int = 0  # clip frames up to the last present frame
    t_after: float | None = None  # the time of the first frame after the last present one
    gap_sum: float = 0.0  # the absent frames after the last present one: bridged if a present one follows
    gap_n: int = 0


class EventTracker:
    """The events of one (source, group), frame by frame (see the module); frames must come in time order.

    clip_frame: (image [H,W,3] uint8 RGB, mask [H,W] bool) -> what the event's clip keeps of a frame (JPEG
    bytes); None: no clips.
    """

    def __init__(self, run_id: str, source: str, group: str, threshold: float = 0.02, min_duration: float = 0.5,
                 max_gap: float = 0.5, clip_frame: Callable[[np.ndarray, np.ndarray], bytes] | None = None) -> None:
        self.run_id, self.source, self.group = run_id, source, group
        self.threshold, self.min_duration, self.max_gap = threshold, min_duration, max_gap
        self.clip_frame = clip_frame
        self._spacing: collections.deque[float] = collections.deque(maxlen=SPACING_FRAMES)
        self._last_t: float | None = None
        self._open: _Open | None = None

    @property
    def interval(self) -> float:
        """The median time between the recent frames (0 before the second frame)."""
        return float(np.median(self._spacing)) if self._spacing else 0.0

    def add(self, frame_index: int, timestamp: float, area: float, image: np.ndarray,
            mask: np.ndarray) -> EventRecord | None:
        """The next frame (area: its mask's area fraction); the event it makes final, if any. Frames without
        a finite timestamp (image folders) are left out, as detect_events leaves them out."""
        if not math.isfinite(timestamp):
            return None
        if self._last_t is not None:
            self._spacing.append(timestamp - self._last_t)
        self._last_t = timestamp
        done = None
        current = self._open
        if current is not None and current.t_after is not None \
                and timestamp - current.t_after > max(self.max_gap, self.interval) + EPS:
            done = self._close(current, current.t_after - current.last_t)
            current = self._open = None
        present = area >= self.threshold
        if present and current is None:
            self._open = current = _Open(frame_index, timestamp, frame_index, timestamp, area, frame_index, timestamp,
                                         image, mask, area, 1)
        elif present and current is not None:
            current.area_sum += current.gap_sum + area
            current.n += current.gap_n + 1
            current.gap_sum, current.gap_n, current.t_after = 0.0, 0, None
            current.last_frame, current.last_t = frame_index, timestamp
            if area > current.peak_area:
                current.peak_area, current.peak_frame, current.peak_t = area, frame_index, timestamp
                current.peak_image, current.peak_mask = image, mask
        elif current is not None:
            if current.t_after is None:
                current.t_after = timestamp
            current.gap_sum += area
            current.gap_n += 1
        if current is not None and self.clip_frame is not None and len(current.clip) < CLIP_MAX_FRAMES:
            current.clip.append((timestamp, self.clip_frame(image, mask)))
        if present and current is not None:
            current.clip_at_last = len(current.clip)
        return done

    def finish(self) -> EventRecord | None:
        """The source ended: the open event, if it covers ``min_duration`` (its last present frame standing for
        the time until the next frame, or the interval when it was the source's last)."""
        current, self._open = self._open, None
        if current is None:
            return None
        return self._close(current, current.t_after - current.last_t if current.t_after is not None else self.interval)

    def _close(self, current: _Open, last_stands_for: float) -> EventRecord | None:
        """The event of ``current``, or None when it is shorter than ``min_duration``."""
        if current.last_t - current.first_t + last_stands_for < self.min_duration - EPS:
            return None
        event = Event(start_frame=current.first_frame, end_frame=current.last_frame, start_time=current.first_t,
                      end_time=current.last_t, duration=current.last_t - current.first_t,
                      peak_area_fraction=current.peak_area, mean_area_fraction=current.area_sum / current.n,
                      n_frames=current.n)
        return EventRecord(self.run_id, self.source, self.group, event, current.peak_frame, current.peak_t,
                           current.peak_image, current.peak_mask, tuple(current.clip[:current.clip_at_last]))
