"""What a run finds, handed over as it finds it: a record per frame, a record per event, and the
observers that take them.

    def on_frame(frame: FrameRecord) -> None: ...      # every result, once its row is written
    def on_event(event: EventRecord) -> None: ...      # every event, once it is final
    report = run_pipeline(["cam.mp4"], "out", engine, on_frame=on_frame, on_event=on_event)

or an :class:`Observer` subclass in ``run_pipeline(..., observers=[...])``, or the iterator of
:mod:`streamcosal.run.iterate`. The rules (also in docs/delivery.md):

- Calls come from the run's writing thread (for video files a thread beside the engine), one at a
  time, also when groups run at once; a frame's record comes after its row is written. A slow
  callback slows the run: hand heavy work to a thread of your own (or use the iterator).
- Records share the run's arrays (masks, frames): read them, do not change them.
- A callback that raises an ``Exception`` is not called again in this run; the run goes on and
  saves everything. The error, with the callback's name, the source, the group and the frame or
  event, is logged once and listed in ``RunReport.callback_errors`` (``exit_code`` is then 1).
- A callback that raises :class:`StopRun` stops the run as Ctrl-C would, everything done kept
  (``RunReport.interrupted`` is ``"StopRun"``; ``exit_code`` as for a finished run).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from streamcosal.io.redact import redact
from streamcosal.run.concurrent import GroupStopped
from streamcosal.run.interrupts import Terminated
from streamcosal.storage.events import Event
from streamcosal.storage.parquet_files import source_key

if TYPE_CHECKING:
    from streamcosal.run.records import RunReport

logger = logging.getLogger(__name__)


class StopRun(GroupStopped):
    """Raised by an observer (a callback, a closed iterator) to stop the run: each group stops at its
    next window, what was done is saved, the report says ``interrupted = "StopRun"``."""


def stop_name(stop: BaseException) -> str:
    """What stopped a run, as ``RunReport.interrupted`` names it: ``SIGINT`` (Ctrl-C), ``SIGTERM`` or ``StopRun``."""
    if isinstance(stop, StopRun):
        return "StopRun"
    return "SIGTERM" if isinstance(stop, Terminated) else "SIGINT"


@dataclass(frozen=True)
class FrameRecord:
    """One frame's result, as its row in the results (``storage.FrameResult``) has it.

    mask: [H,W] bool at the frame's size; image: [H,W,3] uint8 RGB, the frame segmented.
    timestamp: seconds since the source's first frame (NaN for image folders: no time).
    latency_s: live sources, seconds from the frame's arrival to its row (None otherwise).
    """

    run_id: str
    source: str
    group: str
    window: int
    frame_index: int
    timestamp: float
    area_fraction: float
    mean_prob: float
    similarity: float
    mask: np.ndarray
    image: np.ndarray
    latency_s: float | None = None

    @property
    def bbox(self) -> tuple[int, int, int, int] | None:
        """(x, y, w, h) of the smallest box holding the mask; None when the mask is empty."""
        if not self.mask.any():
            return None
        x, y, w, h = cv2.boundingRect(self.mask.astype(np.uint8))
        return int(x), int(y), int(w), int(h)


@dataclass(frozen=True)
class EventRecord:
    """One final event of a (source, group): the interval (``storage.events.Event``, the same fields as
    the stored events) and its peak frame, the frame of the largest area (the first of them).

    peak_image: [H,W,3] uint8 RGB; peak_mask: [H,W] bool. clip: the event's frames with the overlay
    drawn, (timestamp, JPEG bytes) each, at most ``event_tracker.CLIP_MAX_FRAMES`` (the first ones);
    empty unless an observer asked for clips (``Observer.wants_clips``).
    """

    run_id: str
    source: str
    group: str
    event: Event
    peak_frame_index: int
    peak_timestamp: float
    peak_image: np.ndarray
    peak_mask: np.ndarray
    clip: tuple[tuple[float, bytes], ...] = ()

    @property
    def id(self) -> str:
        """Unique per run, source and event, the same on every retry: ``<run_id>:<source key>:<start frame>``
        (the source key is ``storage.parquet_files.source_key``, the name of the source's results folder)."""
        return f"{self.run_id}:{source_key(self.source)}:{self.event.start_frame}"


class Observer:
    """Takes a run's results as they come (see the module for when and how it is called). Each method does
    nothing here: override those you need. ``wants_clips``: events carry their frames (``EventRecord.clip``)."""

    wants_clips: bool = False

    def on_frame(self, frame: FrameRecord) -> None:
        """A frame's result, after its row was written."""

    def on_event(self, event: EventRecord) -> None:
        """An event, once final: for a live source when the object has been gone longer than the events'
        ``max_gap`` (or at the end), for a file, a pipe or a folder when the source is done."""

    def on_end(self, report: RunReport) -> None:
        """The run ended (also when stopped): every record was handed over; ``report`` is about to be saved."""


class Callbacks(Observer):
    """Two plain functions as an observer; either may be None."""

    def __init__(self, on_frame: Callable[[FrameRecord], object] | None = None,
                 on_event: Callable[[EventRecord], object] | None = None) -> None:
        self.frame_callback, self.event_callback = on_frame, on_event

    def on_frame(self, frame: FrameRecord) -> None:
        if self.frame_callback is not None:
            self.frame_callback(frame)

    def on_event(self, event: EventRecord) -> None:
        if self.event_callback is not None:
            self.event_callback(event)


def callback_name(observer: Observer, method: str) -> str:
    """What an error names: the function given as ``on_frame=``/``on_event=``, or ``Class.method``."""
    if isinstance(observer, Callbacks):
        function = observer.frame_callback if method == "on_frame" else observer.event_callback
        return f"{method}={getattr(function, '__qualname__', repr(function))}"
    return f"{type(observer).__qualname__}.{method}"


def where(record: FrameRecord | EventRecord) -> str:
    """Where a record is from, for messages: ``source S, group G, frame N`` or ``..., event ID (frames A-B)``."""
    if isinstance(record, FrameRecord):
        at = f"frame {record.frame_index}"
        if math.isfinite(record.timestamp):
            at += f" ({record.timestamp:.3f} s)"
    else:
        at = f"event {record.id} (frames {record.event.start_frame}-{record.event.end_frame})"
    return f"source {record.source}, group {record.group!r}, {at}"


@dataclass
class Dispatch:
    """Calls the observers; a method that raises is not called again (see the module), a `StopRun` is
    remembered (`stopped`) for the caller to raise where the run can stop."""

    observers: list[Observer]
    errors: list[str] = field(default_factory=list)
    stopped: bool = False
    _broken: set[tuple[int, str]] = field(default_factory=set, init=False)  # (observer id, method) that raised

    def call(self, method: str, record: FrameRecord | EventRecord | RunReport) -> None:
        """``observer.<method>(record)`` for every observer whose method has not failed."""
        for observer in self.observers:
            key = (id(observer), method)
            if key in self._broken:
                continue
            try:
                getattr(observer, method)(record)
            except StopRun:
                self.stopped = True
            except Exception as error:  # a user's callback: reported, the run goes on
                self._broken.add(key)
                at = where(record) if isinstance(record, (FrameRecord, EventRecord)) else "the end of the run"
                message = (f"callback {callback_name(observer, method)} raised {type(error).__name__}: "
                           f"{redact(str(error))} at {at}; it is not called again in this run, the run goes on")
                self.errors.append(message)
                logger.error("%s", message, exc_info=error)
