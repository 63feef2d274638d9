"""Consensus strategies: the consensus each window of a group is segmented against.

    strategy = GlobalConsensus.sample(group, sources, 32, prepare, logits, store)   # files
    strategy = StreamingConsensus(group, store, half_life=30.0)                   # live
    consensus = strategy(window)    # [1,C], or a function of the window's logits [N,C] -> [1,C]
    engine.segment(x, consensus)    # the engine gives such a function the logits of its own pass

- `GlobalConsensus`: GICD's consensus (softmax of the summed logits) of n frames sampled evenly
  over the whole of every source of the group, computed once; every window gets it.
- `StreamingConsensus`: the group's running consensus in the `ConsensusStore`: the logits of each
  window's new frames are added (older evidence decayed with `half_life` seconds of stream time)
  and the window is segmented against the result. The logits come from the backbone pass that
  segments the window (`CoSalEngine.segment` with a consensus function), not from a pass of their
  own. Frames without timestamps (image folders) are
  no stream: nothing decays, every image counts as in a group. The store is saved at least every
  `save_every_s`, so a restarted stream continues from its consensus (its stream time continues
  from the group's last time in the store).

Both leave the group's consensus in the store, where `streamcosal search` finds it, and both are
on one scale: the store's consensus of a running sum of n frames is the softmax of their mean
logits times min(n, group_size) (`ConsensusStore.group_size`, the pipeline's `consensus_frames`),
so a steady stream's consensus is the global consensus of `group_size` of its frames.
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from streamcosal.inference.engine import ConsensusOfLogits
from streamcosal.io.frame import Frame, FrameSource, SourceError
from streamcosal.io.pipe import is_pipe
from streamcosal.io.redact import redact
from streamcosal.io.stream import is_stream
from streamcosal.model import consensus_from_logits
from streamcosal.run.prefetch import Prefetcher
from streamcosal.run.windows import Window, consensus_frame_indices
from streamcosal.storage import ConsensusStore

Logits = Callable[[Tensor], Tensor]  # [N,3,S,S] prepared frames -> [N,C] classifier logits


class ConsensusStrategy(Protocol):
    """Gives a window's consensus [1,C], or the function that makes it from the logits of the window's
    frames (a `ConsensusOfLogits`, for `CoSalEngine.segment`)."""

    def __call__(self, window: Window) -> Tensor | ConsensusOfLogits: ...


def source_identity(sources: Sequence[FrameSource]) -> str:
    """What a group's consensus is computed from: its sources' resolved paths or URLs, one a line."""
    return "\n".join(sorted(source_identity_of(s.name) for s in sources))


def source_identity_of(spec: str | Path) -> str:
    """A source's resolved path (files, folders), a pipe's path as given (`/dev/stdin` resolves to
    another /proc/PID/fd/pipe:[N] every run) or a URL without its password (`redact`: the identity is
    stored, and a changed password is the same camera)."""
    if is_stream(spec):
        return redact(str(spec))
    path = Path(spec)
    return str(path.absolute() if is_pipe(path) else path.resolve())


class GlobalConsensus:
    """One consensus for the whole group, from frames sampled over all of it."""

    def __init__(self, consensus: Tensor):
        self.consensus = consensus  # [1,C]

    @classmethod
    def sample(
        cls,
        group: str,
        sources: Sequence[FrameSource],
        frames: int,
        prepare: Callable[[Frame], Tensor],
        logits: Logits,
        store: ConsensusStore,
    ) -> GlobalConsensus:
        """The consensus of about `frames` frames spread evenly over the sources (finite ones);
        the group's state in `store` becomes their summed logits (replaced, not added to).

        The frames are decoded and prepared in a thread, `SAMPLE_CHUNK` at a time, while `logits`
        runs on the chunk before (on a short video the sample's decoding was 4% of the run)."""
        per_source = math.ceil(frames / len(sources))
        with Prefetcher(_prepared_sample(sources, per_source, prepare), maxsize=2) as chunks:
            parts = [(logits(x), times) for x, times in chunks]
        if not parts:
            raise SourceError(f"group {group!r}: no frame could be read to compute the consensus")
        values = torch.cat([part for part, _ in parts])
        times = [t for _, chunk_times in parts for t in chunk_times if math.isfinite(t)]
        # The group's consensus is these sources' (a re-run replaces it; it never counts them twice).
        store.put(group, values.numpy().astype("float64").sum(0), n=len(values), t=max(times, default=0.0),
                  source=source_identity(sources))
        return cls(consensus_from_logits(values))

    def __call__(self, window: Window) -> Tensor:
        return self.consensus


SAMPLE_CHUNK = 8
"""Frames of the consensus sample per engine call: the next chunk decodes while the engine classifies one."""


def _prepared_sample(sources: Sequence[FrameSource], per_source: int,
                     prepare: Callable[[Frame], Tensor]) -> Iterator[tuple[Tensor, list[float]]]:
    """The consensus sample (:func:`consensus_frame_indices` of each source) in chunks of
    `SAMPLE_CHUNK` prepared frames, [n,3,S,S], with their timestamps."""
    for source in sources:
        frames = source.iter_frames(consensus_frame_indices(source, per_source))
        while chunk := list(itertools.islice(frames, SAMPLE_CHUNK)):
            yield torch.stack([prepare(f) for f in chunk]), [f.timestamp for f in chunk]


class StreamingConsensus:
    """The group's running consensus in the store, updated with each window's new frames."""

    def __init__(self, group: str, store: ConsensusStore, half_life: float, save_every_s: float = 30.0,
                 source: str | None = None):
        """source: what the group's frames come from (`source_identity`), kept in the store."""
        self.group, self.store, self.half_life, self.source = group, store, half_life, source
        self.save_every_s = save_every_s
        self.base_t = store.state(group).t if group in store else 0.0
        self.last_t = self.base_t
        self.last_save = time.monotonic()

    def __call__(self, window: Window) -> ConsensusOfLogits:
        return functools.partial(self.add, window)

    def add(self, window: Window, logits: Tensor) -> Tensor:
        """The running consensus [1,C] once the logits of the window's new frames (``logits``: [N,C], one
        row per frame of the window) are added."""
        new = [i for i, emit in enumerate(window.emit) if emit]
        values = logits[new].numpy()
        times = [f.timestamp for f in window.frames if math.isfinite(f.timestamp)]
        if times:
            self.last_t = max(self.last_t, self.base_t + max(times))
            running = self.store.update(self.group, values, t=self.last_t, half_life=self.half_life,
                                        source=self.source)
        else:  # no time (images): no decay
            running = self.store.update(self.group, values, t=self.last_t, source=self.source)
        if time.monotonic() - self.last_save > self.save_every_s:
            self.store.save()
            self.last_save = time.monotonic()
        return torch.from_numpy(running)[None]
