"""Temporal smoothing: 1-2-1 over each source's frames in time, no look-ahead across windows."""

from __future__ import annotations

import numpy as np

from streamcosal.io.frame import Frame
from streamcosal.run.smoothing import TemporalSmoothing
from streamcosal.run.windows import Window

IMAGE = np.zeros((2, 2, 3), np.uint8)


def window(index: int, frames: list[tuple[str, int]], timed: bool = True) -> Window:
    """A window of (source, frame index) frames, all emitted."""
    return Window(index, [Frame(IMAGE, i, i / 10 if timed else float("nan"), source) for source, i in frames],
                  [True] * len(frames))


def maps(*values: float) -> np.ndarray:
    """[N,2,2] maps, each filled with one value."""
    return np.array(values, np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)


def test_each_map_is_1_2_1_of_its_neighbours_with_the_previous_windows_last_behind() -> None:
    smooth = TemporalSmoothing()
    first = smooth(window(0, [("a", 0), ("a", 1), ("a", 2)]), maps(0.0, 0.4, 0.8))
    np.testing.assert_allclose(first[:, 0, 0], [(0 + 0 + 0.4) / 4, (0 + 0.8 + 0.8) / 4, (0.4 + 1.6 + 0.8) / 4])
    raw = maps(1.0, 0.0, 0.2)
    second = smooth(window(1, [("a", 3), ("a", 4), ("a", 5)]), raw)
    np.testing.assert_allclose(second[:, 0, 0], [(0.8 + 2.0 + 0.0) / 4, (1.0 + 0.0 + 0.2) / 4, (0.0 + 0.4 + 0.2) / 4])
    np.testing.assert_array_equal(raw, maps(1.0, 0.0, 0.2))  # the engine's maps are not changed


def test_sources_sharing_a_window_are_smoothed_apart() -> None:
    """Two cameras in one group: a's frames only with a's, b's with b's (in frame order)."""
    out = TemporalSmoothing()(window(0, [("a", 0), ("b", 7), ("a", 1), ("b", 6)]), maps(0.0, 1.0, 0.4, 0.2))
    np.testing.assert_allclose(out[:, 0, 0], [(0 + 0 + 0.4) / 4, (0.2 + 2.0 + 1.0) / 4, (0 + 0.8 + 0.4) / 4,
                                              (0.2 + 0.4 + 1.0) / 4])


def test_an_overlapping_window_does_not_put_a_later_frame_behind_an_earlier_one() -> None:
    """Streaming with step < window: the next window starts inside the previous one."""
    smooth = TemporalSmoothing()
    smooth(window(0, [("a", 0), ("a", 1), ("a", 2), ("a", 3)]), maps(0.0, 0.0, 0.0, 1.0))
    out = smooth(window(1, [("a", 2), ("a", 3), ("a", 4), ("a", 5)]), maps(0.4, 0.4, 0.4, 0.4))
    np.testing.assert_allclose(out[:, 0, 0], [0.4] * 4)  # frame 3's 1.0 from before is not behind frame 2


def test_frames_without_time_are_left_alone() -> None:
    """An image folder's photos (NaN timestamps) have no order in time."""
    raw = maps(0.0, 1.0, 0.5)
    np.testing.assert_array_equal(TemporalSmoothing()(window(0, [("p", 0), ("p", 1), ("p", 2)], timed=False), raw), raw)
