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
from streamcosal.io.imagefile import image_files, subfolders
from streamcosal.io.open import local_source, open_source
from streamcosal.io.stream import is_stream
from streamcosal.model import consensus_from_logits
from streamcosal.params import MAX_QUERY_FRAMES
from streamcosal.run.windows import sample_consensus_frames
from streamcosal.storage import ConsensusStore


def source_consensus(engine: CoSalEngine, spec: str | Path, frames: int = 32) -> np.ndarray:
    """[1000] consensus of a video file, image folder or stream: GICD's consensus of `frames`
    frames sampled evenly over a finite source (the first `frames` frames of a live one), at most
    `MAX_QUERY_FRAMES` (held at once)."""
    if not 1 <= frames <= MAX_QUERY_FRAMES:
        raise ValueError(f"frames {frames}: give 1 to {MAX_QUERY_FRAMES} (the sampled frames are held at once)")
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


def in_store(store: ConsensusStore, query: str | Path) -> bool:
    """Whether `query` is the name of a group of `store` (and not a file or folder of that name)."""
    return isinstance(query, str) and query in store and not Path(query).exists()


def check_query(store: ConsensusStore, query: str | Path) -> None:
    """Refuse, before any model is loaded, a query that is neither a group of `store` nor a source (an
    existing file or folder, a ``file://`` URL of one, a stream URL or camera).

    Raises:
        ValueError: naming the query, the store and the groups it holds.
    """
    if not str(query).strip():
        raise ValueError(f"the query is empty: give a group of {store.path} ({len(store.groups())} held), or a video "
                         "file, image folder or stream URL to search with")
    if in_store(store, query) or is_stream(query):
        return
    local = Path(local_source(query))
    if local.is_dir() and not image_files(local)[0] and (inside := subfolders(local)):
        raise ValueError(f"{local} holds folders ({', '.join(inside[:3])}{', ...' if len(inside) > 3 else ''}), not "
                         f"images: a query is one group's images or one video; give one of them, e.g. {local / inside[0]}")
    if local.exists():
        return
    groups = store.groups()
    listed = ", ".join(repr(g) for g in groups[:20]) + (f" and {len(groups) - 20} more" if len(groups) > 20 else "")
    held = f"its groups: {listed}" if groups else "it holds no group yet"
    raise ValueError(f"no group {str(query)!r} in {store.path}; {held}. Give one of them, or a video file, image "
                     "folder or stream URL to search with")


def search(store: ConsensusStore, query: str | Path, engine: CoSalEngine | None, k: int = 5,
           frames: int = 32) -> list[tuple[str, float]]:
    """The k groups of `store` whose consensus is nearest (cosine) to the query's, best first.

    query: the name of a group in the store (left out of the answer), or a video file, image
    folder or stream URL whose consensus is computed with `engine` from `frames` frames.

    Raises:
        ValueError: a query that is neither a group of `store` nor a source (:func:`check_query`).
    """
    check_query(store, query)
    if in_store(store, query):
        return store.nearest(query, k)
    if engine is None:
        raise ValueError(f"{query!r} is not a group of {store.path}; to search with a video, pass an engine")
    return store.nearest(source_consensus(engine, query, frames), k)
