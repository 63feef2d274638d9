"""A group's running object prototype across the windows of a video or stream.

The object-prototype gate (:mod:`streamcosal.model.prototype`) compares each map with the object
the group's maps found. Within one window that is a few frames, or one (a live stream at its lowest
latency), and a frame compared only with itself gains nothing; so the pipeline keeps, per group,
the sum of the prototypes of every frame segmented so far and gives it to the next window as its
``prototype_prior``. Held out, single-frame windows: composites maxF 0.509 with the window's own
prototype, 0.600 with the running one (README, Accuracy).

    running = RunningPrototype(half_life=30.0)          # streaming; None for a whole video
    prediction = engine.segment(x, consensus, running.sums)
    running.add(window, prediction)

It lives for one run (it is not kept in the consensus store): a restarted stream builds it again
within its first windows.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .windows import Window

if TYPE_CHECKING:
    from .engine import GroupPrediction


class RunningPrototype:
    """Summed object prototypes of a group's frames, per gate level ([C_l] each), decayed by stream
    time: a frame's weight halves every ``half_life`` seconds (None: no decay, for a whole video
    or an image folder)."""

    def __init__(self, half_life: float | None = None) -> None:
        self.half_life = half_life
        self.sums: list[np.ndarray] | None = None
        self.t: float | None = None

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
        self.sums = sums if self.sums is None else [a + b for a, b in zip(self.sums, sums)]
        if now is not None:
            self.t = now if self.t is None else max(self.t, now)
