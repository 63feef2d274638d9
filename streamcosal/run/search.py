"""Nearest groups: which archived videos/groups share a common object with a new one.

    store = ConsensusStore.open("results/consensus.npz")
    search(store, "new_clip.mp4", engine, k=5)   # [(group, cosine similarity), ...] best first
    search(store, "blackswan", engine=None)       # a group already in the store
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from streamcosal.inference.engine import CoSalEngine
from streamcosal.io.open import open_source
from streamcosal.model import consensus_from_logits
from streamcosal.run.windows import sample_consensus_frames
from streamcosal.storage import ConsensusStore


def source_consensus(engine: CoSalEngine, spec: str | Path, frames: int = 32) -> np.ndarray:
    """[1000] consensus of a video file, image folder or stream: GICD's consensus of `frames`
    frames sampled evenly over a finite source (the first `frames` frames of a live one)."""
    with open_source(spec) as source:
        size = engine.size_for(source.frame_shapes())  # as the pipeline would segment it
        if source.info.frame_count:
            sampled = sample_consensus_frames(source, frames)
        else:
            sampled = [frame for _, frame in zip(range(frames), source)]
    if not sampled:
        raise ValueError(f"{spec}: no frame could be read to compute its consensus")
    logits = engine.logits(torch.stack([engine.prepare(f.image, size) for f in sampled]))
    return consensus_from_logits(logits)[0].numpy()


def search(store: ConsensusStore, query: str | Path, engine: CoSalEngine | None, k: int = 5,
           frames: int = 32) -> list[tuple[str, float]]:
    """The k groups of `store` whose consensus is nearest (cosine) to the query's, best first.

    query: the name of a group in the store (left out of the answer), or a video file, image
    folder or stream URL whose consensus is computed with `engine` from `frames` frames.
    """
    if isinstance(query, str) and query in store and not Path(query).exists():
        return store.nearest(query, k)
    if engine is None:
        raise ValueError(f"{query!r} is not a group of {store.path}; to search with a video, pass an engine")
    return store.nearest(source_consensus(engine, query, frames), k)
