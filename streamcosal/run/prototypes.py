"""A group's running object prototype across the windows of a video or stream.

The object-prototype gate (:mod:`streamcosal.model.prototype`) compares each map with the object
the group's maps found. Within one window that is a few frames, or one (a live stream at its lowest
latency), and a frame compared only with itself gains nothing; so the pipeline keeps, per group,
the sum of the prototypes of every frame segmented so far and gives it to the next window as its
``prototype_prior``. Held out, single-frame windows: composites maxF 0.509 with the window's own
prototype, 0.600 with the running one (docs/accuracy.md).

    running = RunningPrototype(half_life=30.0, recent=8)  # streaming; None for a whole video
    prediction = engine.segment(x, consensus, running.prior(window))
    running.add(window, prediction)

A window's context frames (overlapping windows, or the padding of a stream's last window) were added
when they were emitted and are in the window's own prototypes again: ``prior`` leaves them out, so
they weigh once (four held-out DAVIS videos, 40 frames each at 854x480, windows of 8 every 2 frames:
mean IoU 0.7149 against 0.7146 counting them twice; a matter of weighting, not of accuracy). It lives for one run (it is not kept in the consensus store): a restarted stream
builds it again within its first windows.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np

from streamcosal.io.frame import Frame
from streamcosal.run.windows import Window

if TYPE_CHECKING:
    from streamcosal.inference.engine import GroupPrediction


class RunningPrototype:
    """Summed object prototypes of a group's frames, per gate level ([C_l] each), decayed by stream
    time: a frame's weight halves every ``half_life`` seconds (None: no decay, for a whole video
    or an image folder)."""

    def __init__(self, half_life: float | None = None, recent: int = 0) -> None:
        """recent: how many of the latest emitted frames' prototypes to remember, so that ``prior``
        can leave them out when they come back as context (the pipeline's window size)."""
        self.half_life = half_life
        self.sums: list[np.ndarray] | None = None
        self.t: float | None = None
        self.recent: OrderedDict[tuple[str, int], list[np.ndarray]] = OrderedDict()
        self.keep = recent

    def prior(self, window: Window) -> list[np.ndarray] | None:
        """The sums without the window's context frames (emit False) that are remembered: those are
        in the window's own prototypes too. None before any frame was added."""
        if self.sums is None:
            return None
        context = [self.recent[key] for key in (_key(f) for f, emit in zip(window.frames, window.emit) if not emit)
                   if key in self.recent]
        if not context:
            return self.sums
        return [total - sum(frame[level] for frame in context) for level, total in enumerate(self.sums)]

    def add(self, window: Window, prediction: GroupPrediction) -> None:
        """Add the prototypes of the window's emitted frames (context frames were added before)."""
        if prediction.prototypes is None:
            return
        new = [i for i, emit in enumerate(window.emit) if emit]
        sums = [level[new].sum(0) for level in prediction.prototypes]
        times = [f.timestamp for f in window.frames if math.isfinite(f.timestamp)]
        now = max(times) if times else None
        if self.sums is not None and self.half_life is not None and now is not None and self.t is not None:
            decay = 0.5 ** (max(now - self.t, 0.0) / self.half_life)
            self.sums = [s * decay for s in self.sums]
            self.recent = OrderedDict((key, [p * decay for p in frame]) for key, frame in self.recent.items())
        self.sums = sums if self.sums is None else [a + b for a, b in zip(self.sums, sums)]
        if now is not None:
            self.t = now if self.t is None else max(self.t, now)
        for i in new:
            self.recent[_key(window.frames[i])] = [level[i] for level in prediction.prototypes]
        while len(self.recent) > self.keep:
            self.recent.popitem(last=False)


def _key(frame: Frame) -> tuple[str, int]:
    return frame.source, frame.index
