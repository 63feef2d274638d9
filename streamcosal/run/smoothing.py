"""Temporal smoothing of a video's maps: each frame's map averaged with its neighbours' in time.

A frame's map is 1-2-1 of the maps of the frame before it, itself and the frame after it, within
the window it was segmented in. Without look-ahead across windows (no added latency): the
previous window's last map stands behind a window's first frame, and a window's last frame has
itself ahead. Sources are smoothed separately (several cameras share a window); frames without
time (image folders: NaN timestamps) are left alone. The maps the engine made stay as they were
for the running object prototype; only what is written is smoothed.

Opt-in (``RunParams.temporal_smoothing``, ``--temporal-smoothing``). Measured through the pipeline
(reports/guided/temporal_smoothing_pipeline.md): the shipped default on the 14 DAVIS videos at
854x480, mean IoU of the 0.5-masks 0.654 -> 0.650: slow objects gain (bmx-trees +0.024, libby +0.016),
fast ones lose (motocross-jump -0.041, breakdance -0.024). Its held-out twin on the four videos it
did not see: 0.688 -> 0.699 (reports/guided/temporal_smoothing.md). It steadies the masks of still
cameras and slow objects and blurs fast ones, so it is off by default.
"""

from __future__ import annotations

import math

import numpy as np

from streamcosal.run.windows import Window


class TemporalSmoothing:
    """1-2-1 over time, window by window, per source; remembers each source's last map."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, np.ndarray]] = {}  # source -> (frame index, its map [S,S])

    def __call__(self, window: Window, maps: np.ndarray) -> np.ndarray:
        """maps: [N,S,S] of the window's N frames (in ``window.frames`` order) -> smoothed [N,S,S]."""
        out = maps.copy()
        rows: dict[str, list[int]] = {}
        for i, frame in enumerate(window.frames):
            if not math.isnan(frame.timestamp):
                rows.setdefault(frame.source, []).append(i)
        for source, own in rows.items():
            own.sort(key=lambda i: window.frames[i].index)
            seq = maps[own]
            last = self._last.get(source)
            first = window.frames[own[0]].index
            behind = last[1] if last is not None and last[0] < first else seq[0]
            padded = np.concatenate([behind[None], seq, seq[-1:]])
            out[own] = (padded[:-2] + 2 * padded[1:-1] + padded[2:]) / 4
            self._last[source] = (window.frames[own[-1]].index, seq[-1])
        return out
