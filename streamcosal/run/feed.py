"""The run's results handed to its observers as they are made: the sink gives the feed each window's
frame records once their rows are written; the feed follows each (source, group)'s events
(`EventTracker`) and calls the observers (`observers.Dispatch`).

    feed = ResultFeed.for_run(run_id, config, observers, on_frame, on_event)   # + config.webhook/mqtt
    feed.frames([(record, staged), ...])      # a window's frames, after their rows (may raise StopRun)
    feed.source_done(names, group)            # a source closed: its open event, its held events
    feed.finish(report)                       # the end: what is left, observers' on_end, errors

When an event is handed over:

- a live source's (a camera, a stream, any source read with ``live``) as soon as it is final (see
  `event_tracker`), while the source runs;
- a file's, a pipe's or a folder's (``staged``: its rows appear when it is done) when the source is done,
  after its rows were made visible: an event never names results that a killed run sets aside.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from streamcosal.run.delivery import Delivery
from streamcosal.run.delivery.snapshot import clip_frame
from streamcosal.run.event_tracker import EventTracker
from streamcosal.run.observers import Callbacks, Dispatch, EventRecord, FrameRecord, Observer, StopRun

if TYPE_CHECKING:
    from streamcosal.params import RunParams
    from streamcosal.run.records import RunReport, SourceRun


class ResultFeed:
    """One per run, shared by its groups (calls take turns on a lock). ``config``: the event rules
    (``event_threshold``, ``event_min_duration``, ``event_max_gap``)."""

    def __init__(self, run_id: str, config: RunParams, observers: Sequence[Observer]) -> None:
        self.run_id, self.config = run_id, config
        self.dispatch = Dispatch(list(observers))
        self.clips = any(o.wants_clips for o in observers)
        self._trackers: dict[tuple[str, str], EventTracker] = {}
        self._held: dict[tuple[str, str], list[EventRecord]] = {}  # staged sources' events, until done
        self._lock = threading.RLock()

    @classmethod
    def for_run(cls, run_id: str, config: RunParams, observers: Sequence[Observer] = (),
                on_frame: Callable[[FrameRecord], object] | None = None,
                on_event: Callable[[EventRecord], object] | None = None) -> ResultFeed:
        """The feed of a run: ``observers``, the two callbacks, and the deliveries ``config`` asks for
        (``webhook``, ``mqtt``). Raises ValueError for a URL that is not a webhook's or a broker's."""
        delivery = Delivery.from_params(config)
        callbacks = [Callbacks(on_frame, on_event)] if on_frame is not None or on_event is not None else []
        return cls(run_id, config, [*observers, *callbacks, *([delivery] if delivery is not None else [])])

    def frames(self, records: Sequence[tuple[FrameRecord, bool]]) -> None:
        """A window's frames, (record, staged) each, in order: to the observers' ``on_frame``, and to the
        events. Raises `StopRun` once an observer asked for it. Nothing to do without observers."""
        if not self.dispatch.observers:
            return
        with self._lock:
            for record, staged in records:
                self.dispatch.call("on_frame", record)
                key = (record.source, record.group)
                event = self._tracker(key).add(record.frame_index, record.timestamp, record.area_fraction,
                                               record.image, record.mask)
                if event is not None:
                    self._event(key, event, staged)
            if self.dispatch.stopped:
                raise StopRun

    def source_done(self, sources: Sequence[str], group: str) -> None:
        """The sources (a member's row names: its name, or an image folder's files) closed: their open
        events end, their held events go to the observers."""
        with self._lock:
            for source in sources:
                key = (source, group)
                tracker = self._trackers.pop(key, None)
                event = tracker.finish() if tracker is not None else None
                if event is not None:
                    self._event(key, event, staged=False)
                for held in self._held.pop(key, []):
                    self.dispatch.call("on_event", held)

    def finish(self, report: RunReport) -> None:
        """The run ended: the sources not closed end now, the observers' ``on_end`` runs, and what failed
        in a callback goes to ``report.callback_errors``."""
        with self._lock:
            for source, group in {*self._trackers, *self._held}:
                self.source_done([source], group)
            self.dispatch.call("on_end", report)
            report.callback_errors.extend(self.dispatch.errors)

    def raise_if_stopped(self, sources: Sequence[SourceRun]) -> None:
        """Raise `StopRun` when an observer asked for it and a source is still running (groups that ran
        at once end quietly on it, their sources left running)."""
        if self.dispatch.stopped and any(run.status == "running" for run in sources):
            raise StopRun

    def _tracker(self, key: tuple[str, str]) -> EventTracker:
        tracker = self._trackers.get(key)
        if tracker is None:
            cfg = self.config
            tracker = self._trackers[key] = EventTracker(
                self.run_id, *key, threshold=cfg.event_threshold, min_duration=cfg.event_min_duration,
                max_gap=cfg.event_max_gap, clip_frame=clip_frame if self.clips else None)
        return tracker

    def _event(self, key: tuple[str, str], event: EventRecord, staged: bool) -> None:
        if staged:
            self._held.setdefault(key, []).append(event)
        else:
            self.dispatch.call("on_event", event)
