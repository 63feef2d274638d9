"""Groups that run at the same time: one thread per group when a run has live groups, and a few
threads taking the groups of an archive in turn when the engine is fast (``--parallel-groups``).

    if len(groups) > 1 and any_live(specs, config.live):
        run_concurrently(job, groups)           # each group's `_Job.run_group` in its own thread
    elif workers > 1:
        run_concurrently(job, groups, workers)  # `workers` threads, each taking the next group when done
    else:
        for name, specs, runs in groups: job.run_group(name, specs, runs)   # one after another

A live group never ends, so groups run one after another would leave every group after the first
camera unread ("pending, 0 frames") until the run is stopped. When any group of the run is live
(a stream or camera, or every source with `--live`), every group, finite ones too, runs in a thread
of its own; each keeps its own consensus, latency target (`live.WindowSize`), readers and counters.
An archive's groups (files) end, but on a GPU one video's decoding, frame preparation and writing
cannot keep the engine busy: a few of them at once can (`workers` threads; a group is still one
video's frames, with its own consensus). What they share takes turns:

- the engine: `FairLock`, taken for each engine call (a window's segmentation, a chunk of a global
  consensus sample): turns in the order asked for (groups waiting together: about the same frames
  each), so a busy camera cannot starve another group; a live group's windows are sized for its
  latency target with its wait for the others' turns taken off (`FairLock.waited`, `live.WindowSize`);
- the results: `ResultSink` serialises its writes with its own lock (live groups write inline, files
  through their `SinkThread`);
- the consensus store: the running consensus' update (inside the engine's call) and the store's
  save take `Together.store` (the store is also thread-safe call by call).

Signals (Ctrl-C, SIGTERM) reach the main thread only (`interrupts.stop_signals`): it waits for the
group threads in short waits on each one's own "ended" event (never `Thread.join`, whose state a signal
can corrupt before Python 3.13), so a signal raises there; it then asks every group to stop
(`Together.stop`: checked between windows; every live reader is stopped, so a window being waited
for returns at once), waits for each to write what it has and close its members (at most
`STOP_GRACE_S`, later signals ignored meanwhile), and raises the signal's exception again, so the
run ends as a run in one thread does. An unexpected error of a group thread fails that group's
sources (as `run_group` records a source's error) and not the others.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import torch
from torch import Tensor

from streamcosal.io.stream import is_stream
from streamcosal.run.interrupts import Terminated
from streamcosal.run.live import LiveReader
from streamcosal.run.records import SourceRun, is_transient

if TYPE_CHECKING:
    from streamcosal.run.consensus import ConsensusStrategy
    from streamcosal.run.windows import Window

logger = logging.getLogger(__name__)

JOIN_POLL_S = 0.2  # the main thread's joins: a signal is handled within this
STOP_GRACE_S = 30.0  # after a stop, how long the groups are waited for (a camera's connection try may block)
GPU_FILES_AT_ONCE = 4  # a GPU engine's default `parallel_groups`: files decoded, prepared and written at once

T = TypeVar("T")
Group = tuple[str, list[str | Path], list[SourceRun]]  # name, sources, their run records


class GroupRunner(Protocol):
    """What runs a run's groups (the pipeline's job): one group at a time per call, sharing ``together``."""

    together: Together | None

    def run_group(self, group: str, specs: list[str | Path], runs: list[SourceRun]) -> None: ...


class GroupStopped(BaseException):
    """Raised in a group's thread between windows once the run is stopping; a BaseException, so that no
    handler of errors takes it for the group's failure: its sources stay "running" (the run marks them
    "interrupted"), as Ctrl-C leaves them in a run in one thread."""


class FairLock:
    """Turns on the engine for threads that ask for it at once, fair by frames (start-time fair queuing).

    A turn asked for with `cost` (the window's frames) starts, in virtual time, at the later of the
    virtual time now and the end of the asking thread's previous turn, and ends `cost` later; the
    waiting turn that starts first goes next (equal starts: the first asked). The virtual time is
    the start of the turn being served. So threads that ask again at once take strict turns when
    their windows are equal (a ticket lock: one that asks again waits behind one already waiting),
    and each gets about the same frames when they are not (a camera whose windows are half as big
    gets two turns for the other's one); nobody waits for more than one turn of every other thread,
    and a thread idle for a while gets no credit for it. Not reentrant.

        with lock.turn(len(x)):
            engine.segment(x, ...)
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held = False
        self._virtual = 0.0  # the start of the turn being served (or the last one)
        self._ends: dict[int, float] = {}  # thread id -> the virtual end of its last turn
        self._waiting: list[tuple[float, int]] = []  # a heap of (virtual start, order asked)
        self._asked = itertools.count()
        self._waited: dict[int, float] = {}  # thread id -> seconds it has waited for its turns

    def waited(self) -> float:
        """The seconds the calling thread has waited for its turns so far (`live.WindowSize` takes them out
        of the engine's time per frame: a wait per window, not per frame)."""
        return self._waited.get(threading.get_ident(), 0.0)

    @contextlib.contextmanager
    def turn(self, cost: float = 1.0) -> Iterator[None]:
        """Hold the lock for a turn costing `cost` (> 0; e.g. frames)."""
        me, asked = threading.get_ident(), time.monotonic()
        with self._cond:
            start = max(self._virtual, self._ends.get(me, 0.0))
            self._ends[me] = start + max(cost, 1e-6)
            mine = (start, next(self._asked))
            heapq.heappush(self._waiting, mine)
            try:
                while self._held or self._waiting[0] != mine:
                    self._cond.wait()
            except BaseException:  # gave up waiting (an asynchronous exception): out of the queue
                self._waiting.remove(mine)
                heapq.heapify(self._waiting)
                self._cond.notify_all()
                raise
            heapq.heappop(self._waiting)
            self._held, self._virtual = True, start
            self._waited[me] = self._waited.get(me, 0.0) + time.monotonic() - asked
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                self._cond.notify_all()


@dataclass
class Together:
    """What the groups of a run share while they run at once (`_Job.together`)."""

    engine: FairLock = field(default_factory=FairLock)
    store: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    readers: list[LiveReader] = field(default_factory=list)  # every live reader of the run
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self) -> None:
        """Raise `GroupStopped` once the run is stopping (a group's thread, between windows)."""
        if self.stop.is_set():
            raise GroupStopped

    def add_readers(self, readers: Sequence[LiveReader]) -> None:
        """A group's live readers, stopped with the run (at once when it is stopping already)."""
        with self._lock:
            self.readers.extend(readers)
            if self.stop.is_set():
                for reader in readers:
                    reader.stop()

    def request_stop(self) -> None:
        """Tell every group to stop: set `stop`, then stop every live reader (a wait for frames returns)."""
        with self._lock:
            self.stop.set()
            for reader in self.readers:
                reader.stop()

    def consensus(self, strategy: ConsensusStrategy) -> ConsensusStrategy:
        """`strategy` whose store updates (a running consensus, made inside the engine's call) hold `store`."""

        def locked(window: Window) -> Tensor | Callable[[Tensor], Tensor]:
            consensus = strategy(window)
            if isinstance(consensus, Tensor):
                return consensus
            return functools.partial(self._under_store, consensus)

        return locked

    def _under_store(self, consensus: Callable[[Tensor], Tensor], logits: Tensor) -> Tensor:
        with self.store:
            return consensus(logits)


def any_live(specs: Sequence[str | Path], live: bool) -> bool:
    """Whether a run of these sources has a live group: `--live`, or a stream or camera among them."""
    return live or any(is_stream(spec) for spec in specs)


def run_concurrently(job: GroupRunner, groups: Sequence[Group], workers: int | None = None) -> None:
    """Each group's `job.run_group` in a thread, until every one has ended (see the module): every group at
    once, or `workers` threads each taking the next group not yet begun. A stop signal stops them all (no
    group begins after it), then is raised again here once they have written what they have."""
    together = job.together = Together()  # kept set: a thread still running after a stop keeps checking it
    count = len(groups) if workers is None else workers
    each_in_threads(groups, lambda group: _run_group(job, *group), count, lambda group: f"streamcosal-group {group[0]}",
                    together.stop, together.request_stop)


def files_at_once(asked: int | None, device: torch.device) -> int:
    """How many files (groups, or an archive's units) run at once: `asked`, else 1 on a CPU (the engine uses
    every core) and `GPU_FILES_AT_ONCE` on a GPU."""
    return asked or (1 if device.type == "cpu" else GPU_FILES_AT_ONCE)


def each_in_threads(items: Sequence[T], work: Callable[[T], object], workers: int, name: Callable[[T], str],
                    stop: threading.Event, request_stop: Callable[[], None]) -> None:
    """`work(item)` for every item, in `workers` threads (at most one per item), each taking the next item
    not yet begun until `stop` is set; `work` handles its own errors. Call from the thread that gets the
    signals: a Ctrl-C or SIGTERM there calls `request_stop` (which must set `stop`), waits for the threads
    (at most `STOP_GRACE_S`) and is raised again."""
    queue = iter(items)
    taking = threading.Lock()

    def run(ended: threading.Event) -> None:
        try:
            while not stop.is_set():
                with taking:
                    item = next(queue, None)
                if item is None:
                    return
                threading.current_thread().name = name(item)
                work(item)
        finally:
            ended.set()

    count = max(1, min(workers, len(items)))
    workers_ended = {threading.Thread(target=run, args=(ended,), name="streamcosal-worker", daemon=True): ended
                     for ended in (threading.Event() for _ in range(count))}
    try:
        for thread in workers_ended:
            thread.start()
        _join(workers_ended.values())
    except BaseException:  # KeyboardInterrupt, Terminated: this thread is the one that gets them
        request_stop()
        _join_after_stop(workers_ended)
        raise


def _run_group(job: GroupRunner, name: str, specs: list[str | Path], runs: list[SourceRun]) -> None:
    """A group's thread: `job.run_group`; what it raises fails this group's sources, not the run."""
    try:
        job.run_group(name, specs, runs)
    except GroupStopped:
        pass
    except BaseException as error:  # kept in the group's records; the other groups go on
        message = f"group {name!r}: stopped after {sum(r.frames for r in runs)} frames: {type(error).__name__}: {error}"
        logger.exception("%s", message)
        for run in runs:
            if run.status in ("pending", "running"):
                run.status, run.error, run.transient = "failed", message, is_transient(error)


def _join(ended: Iterable[threading.Event]) -> None:
    """Wait until every thread has ended, in short waits (a signal handler runs between them). Each thread
    sets its own event: `Thread.join` interrupted by a signal can mark a thread that still runs as ended
    (Python before 3.13), and the interpreter would then exit under a thread still inside the engine."""
    for event in ended:
        while not event.wait(JOIN_POLL_S):
            pass


def _join_after_stop(workers_ended: dict[threading.Thread, threading.Event]) -> None:
    """After a stop: wait for the groups to write what they have, at most `STOP_GRACE_S`; another Ctrl-C or
    SIGTERM meanwhile does not cut that short."""
    deadline = time.monotonic() + STOP_GRACE_S
    while True:
        try:
            for ended in workers_ended.values():
                while not ended.wait(JOIN_POLL_S) and time.monotonic() < deadline:
                    pass
            break
        except (KeyboardInterrupt, Terminated):
            logger.warning("stopping: waiting for every thread to write its results")
    stuck = [t.name for t, ended in workers_ended.items() if not ended.is_set()]
    if stuck:
        logger.warning("stopping: %s still running after %.0f s (a source that does not answer); "
                       "ending without them", ", ".join(stuck), STOP_GRACE_S)
