"""The run's progress bars on stderr (`PipelineConfig.show_progress`; the CLI shows them): a bar per group,
its frames, rate and time left."""

from __future__ import annotations

import math

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from streamcosal.io.frame import VideoInfo


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} frames/s" if speed else "-- frames/s")


def frame_progress(show: bool) -> Progress:
    """The bars (disabled, drawing nothing, when not ``show``)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(), TimeRemainingColumn())
    return Progress(*columns, console=Console(stderr=True), disable=not show)


def estimated_frames(info: VideoInfo, stride: int, fps: float | None) -> int | None:
    """How many frames a finite source will give with this sampling (None when unknown)."""
    if not info.frame_count:
        return None
    if fps is not None:
        if info.duration and info.fps > fps:
            return min(info.frame_count, math.ceil(info.duration * fps))
        return info.frame_count
    return math.ceil(info.frame_count / stride)
