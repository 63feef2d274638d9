"""The engine shared by an archive's groups running at once, their windows segmented in batches.

Each group's thread asks for its window's segmentation and waits. While the engine is busy the
requests queue; when it is free, the thread whose request waited longest takes every queued request
(in the order asked, up to one chunk of frames: :func:`~streamcosal.inference.batch.segment_together`
batches what can be batched), runs them in one engine call in its turn on the engine (`FairLock`,
which the groups' consensus samples take too), and hands each its result. A GPU then segments 4
groups' windows of 8 as one batch of 32 instead of four of 8; a group's results are those it gets
alone. The engine's time of a batch is shared among its requests by their frames (the run report's
engine seconds add up to the engine's busy time).

Live groups do not use it: a live window's size is set by its latency target from the time it waits
for its own turns (`FairLock.waited`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from torch import Tensor

from streamcosal.inference.batch import SegmentRequest, segment_together
from streamcosal.inference.engine import ConsensusOfLogits, CoSalEngine, GroupPrediction
from streamcosal.run.concurrent import FairLock


@dataclass
class _Asked:
    request: SegmentRequest
    result: GroupPrediction | Exception | None = None
    seconds: float = 0.0
    done: bool = False


@dataclass
class EngineBatches:
    """``segment`` for the threads of one run; see the module."""

    engine: CoSalEngine
    _queue: list[_Asked] = field(default_factory=list)
    _running: bool = False
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def segment(self, x: Tensor, consensus: Tensor | ConsensusOfLogits | None, prior: Sequence[np.ndarray] | None,
                turns: FairLock) -> tuple[GroupPrediction, float]:
        """:meth:`CoSalEngine.segment`'s prediction for this thread's window x [N,3,S,S], and this window's
        share of the engine's seconds; the error it alone met is raised here. ``turns``: the run's engine
        lock, which a batch is run in."""
        mine = _Asked(SegmentRequest(x, consensus, prior))
        with self._cond:
            self._queue.append(mine)
            while not mine.done and (self._running or self._queue[0] is not mine):
                self._cond.wait()
            if not mine.done:
                batch, self._queue[:] = list(self._queue), []
                self._running = True
        if not mine.done:
            self._run(batch, turns)
        if isinstance(mine.result, Exception):
            raise mine.result
        assert mine.result is not None
        return mine.result, mine.seconds

    def _run(self, batch: list[_Asked], turns: FairLock) -> None:
        """The batch's engine call; its results handed out even when this thread is stopped in it."""
        frames = sum(a.request.x.shape[0] for a in batch)
        results: list[GroupPrediction | Exception] = [RuntimeError("the engine call was interrupted")] * len(batch)
        seconds = 0.0
        try:
            with turns.turn(frames):
                start = time.perf_counter()
                results = segment_together(self.engine, [a.request for a in batch])
                seconds = time.perf_counter() - start
        finally:
            with self._cond:
                for asked, result in zip(batch, results):
                    asked.result, asked.seconds, asked.done = result, seconds * asked.request.x.shape[0] / frames, True
                self._running = False
                self._cond.notify_all()
