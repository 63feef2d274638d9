"""A run's results as an iterator: the run goes on in a thread of its own and hands each frame record and
each event record over through a bounded queue, as it makes them.

    with iter_results(["rtsp://cam1/stream"], "results", engine, config) as results:
        for item in results:                          # FrameRecord | EventRecord, in the order made
            if isinstance(item, EventRecord):
                print(item.id, item.event.start_time, item.event.duration)
            elif item.area_fraction > 0.2:
                break                                 # leaving stops the run (as StopRun does), results kept
    report = results.report                           # the RunReport, once the run has ended

The run waits while the queue is full (``maxsize`` records): a consumer slower than the engine slows the
run down (a camera then drops frames by its drop policy) rather than piling records up. Leaving the
``with`` (a ``break``, an exception, Ctrl-C) or `Results.close` stops the run at its next window and
waits until it has saved what it did; an error of the run (a ValueError for a bad URL, an OSError...)
is raised by the iteration. The records are those of :mod:`streamcosal.run.observers`; ``observers``
get them too, in the run's thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from streamcosal.inference.engine import CoSalEngine
from streamcosal.io.open import as_sources
from streamcosal.run.observers import EventRecord, FrameRecord, Observer, StopRun
from streamcosal.run.pipeline import run_pipeline
from streamcosal.run.records import PipelineConfig, RunReport

logger = logging.getLogger(__name__)

PUT_POLL_S = 0.1  # the run's thread, waiting on a full queue, looks this often whether the consumer left
CLOSE_WAIT_S = 60.0  # close(): how long the run is waited for to save what it did

_END = object()


class _Handover(Observer):
    """The observer in the run's thread: puts each record on the queue, waiting while it is full; raises
    `StopRun` once the consumer has left."""

    def __init__(self, items: queue.Queue[object], closed: threading.Event) -> None:
        self.items, self.closed = items, closed

    def on_frame(self, frame: FrameRecord) -> None:
        self.put(frame)

    def on_event(self, event: EventRecord) -> None:
        self.put(event)

    def put(self, item: object) -> None:
        if not _offer(self.items, self.closed, item):
            raise StopRun


def _offer(items: queue.Queue[object], closed: threading.Event, item: object) -> bool:
    """Put ``item`` on ``items``, waiting while the queue is full; False (not put) once ``closed`` is set:
    the consumer has left."""
    while not closed.is_set():
        try:
            items.put(item, timeout=PUT_POLL_S)
            return True
        except queue.Full:
            continue
    return False


class Results:
    """The iterator of `iter_results` (see the module); ``report`` is the run's once it has ended."""

    def __init__(self, sources: Sequence[str | Path], out: str | Path, engine: CoSalEngine,
                 config: PipelineConfig | None, group: str | None, maxsize: int, observers: Sequence[Observer]) -> None:
        self.report: RunReport | None = None
        self._items: queue.Queue[object] = queue.Queue(maxsize)
        self._closed = threading.Event()
        self._error: BaseException | None = None
        handover = _Handover(self._items, self._closed)
        self._thread = threading.Thread(target=self._run, args=(sources, out, engine, config, group,
                                                                [*observers, handover]),
                                        name="streamcosal-results", daemon=True)
        self._thread.start()

    def _run(self, sources: Sequence[str | Path], out: str | Path, engine: CoSalEngine, config: PipelineConfig | None,
             group: str | None, observers: list[Observer]) -> None:
        try:  # not in the main thread: signals stay with the consumer, whose leaving stops the run
            self.report = run_pipeline(sources, out, engine, config, group, observers=observers)
        except BaseException as error:  # noqa: BLE001 - raised in the consumer's thread
            self._error = error
        finally:
            _offer(self._items, self._closed, _END)

    def __iter__(self) -> Iterator[FrameRecord | EventRecord]:
        return self

    def __next__(self) -> FrameRecord | EventRecord:
        if self._closed.is_set():
            raise StopIteration
        item = self._items.get()
        if item is _END:
            self._closed.set()
            self._thread.join()
            if self._error is not None:
                raise self._error
            raise StopIteration
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the run (at its next window) and wait until it has saved what it did (at most `CLOSE_WAIT_S`)."""
        self._closed.set()
        self._thread.join(CLOSE_WAIT_S)
        if self._thread.is_alive():
            logger.warning("the run is still saving after %.0f s (a source that does not answer); not waiting",
                           CLOSE_WAIT_S)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def iter_results(sources: str | Path | Iterable[str | Path], out: str | Path, engine: CoSalEngine,
                 config: PipelineConfig | None = None, group: str | None = None, *, maxsize: int = 64,
                 observers: Sequence[Observer] = ()) -> Results:
    """`run_pipeline` in a thread, its frame and event records as an iterator (see the module); the arguments
    are run_pipeline's, ``maxsize`` the records the queue holds."""
    if maxsize < 1:
        raise ValueError(f"maxsize must be >= 1, got {maxsize}")
    return Results(as_sources(sources), out, engine, config, group, maxsize, observers)
