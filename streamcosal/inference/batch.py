"""Several groups' windows in one pass of the network: an archive's videos on a GPU.

A GPU's throughput grows with its batch (the default engine ran 545-596 frames/s at groups of 8 and
3,440 at 64 on an H200) while a video's window is 8 frames. :func:`segment_together` runs the windows of
several groups as one batch: the backbone, the classifier head, GIM and the decoder batched; what the
images of a group share (its consensus, the shared regions' embedding, the object prototype with its
prior) reduced within the group's own images (:meth:`model.gicd.GICD.decode` with ``segments``), so each
group gets the maps it gets alone, to float rounding (tested).

Requests that cannot share a batch run one by one with :meth:`CoSalEngine.segment`: other input sizes
(each size is its own batch), more frames than one chunk, the test-time flip (a second pass), a
compiled network (each mix of group sizes would compile anew). A batch that fails (out of memory, a
consensus function that raises) runs its requests one by one instead, so an error is one group's own
and a running consensus still adds each window once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from streamcosal.inference.engine import ConsensusOfLogits, CoSalEngine, GroupPrediction
from streamcosal.inference.precision import autocast
from streamcosal.inference.retries import called_once
from streamcosal.model import consensus_from_logits
from streamcosal.model.gim import segment_bounds


@dataclass
class SegmentRequest:
    """One group's window: :meth:`CoSalEngine.segment`'s arguments. x: [N,3,S,S] in [0,1]."""

    x: Tensor
    consensus: Tensor | ConsensusOfLogits | None = None
    prior: Sequence[np.ndarray] | None = None


def segment_together(engine: CoSalEngine, requests: Sequence[SegmentRequest]) -> list[GroupPrediction | Exception]:
    """Each request's prediction (or the error it alone met), in order; batched by input size where
    they can be (module docstring)."""
    requests = [SegmentRequest(r.x, called_once(r.consensus) if callable(r.consensus) else r.consensus, r.prior)
                for r in requests]
    results: list[GroupPrediction | Exception | None] = [None] * len(requests)
    batchable = not (engine.flip or engine.compiled)
    by_size: dict[int, list[int]] = {}
    for i, r in enumerate(requests):
        if batchable and r.x.shape[0] <= engine.chunk_size:
            by_size.setdefault(r.x.shape[-1], []).append(i)
    for indices in by_size.values():
        for batch in _fitting(indices, [requests[i].x.shape[0] for i in indices], engine.chunk_size):
            if len(batch) < 2:
                continue
            try:
                for i, prediction in zip(batch, _segment_batch(engine, [requests[i] for i in batch])):
                    results[i] = prediction
            except Exception:  # noqa: BLE001 (out of memory, a consensus that raises: each alone, below)
                if engine.device.type == "cuda":
                    torch.cuda.empty_cache()
    for i, r in enumerate(requests):
        if results[i] is None:
            try:
                results[i] = engine.segment(r.x, r.consensus, r.prior)
            except Exception as error:  # noqa: BLE001 (the request's own error, handed to its group)
                results[i] = error
    return results  # type: ignore[return-value]


def _fitting(indices: list[int], sizes: list[int], limit: int) -> list[list[int]]:
    """``indices`` in order, in runs whose ``sizes`` add up to at most ``limit``."""
    batches: list[list[int]] = [[]]
    total = 0
    for index, size in zip(indices, sizes):
        if total + size > limit:
            batches.append([])
            total = 0
        batches[-1].append(index)
        total += size
    return batches


@torch.no_grad()
def _segment_batch(engine: CoSalEngine, requests: list[SegmentRequest]) -> list[GroupPrediction]:
    """Requests of one input size, at most a chunk of frames in all, in one pass."""
    model, device = engine.model, engine.device
    sizes = [r.x.shape[0] for r in requests]
    bounds = segment_bounds(sizes)
    engine.settle_precision(max(sizes), requests[0].x.shape[-1])
    x = engine.normalise(torch.cat([r.x for r in requests]))
    consensus, prior = None, _stacked_priors(requests, device)
    with autocast(engine.precision, device):
        feats = engine.network.run(lambda: model.backbone.features(x))
        if model.use_gim:
            given = [r.consensus for r in requests]
            logits = None
            if any(not isinstance(c, Tensor) for c in given):
                logits = engine.network.run(lambda: model.consensus_logits(x, feats[4])).cpu()
            rows = [c.reshape(1, -1) if isinstance(c, Tensor) else
                    (c(logits[a:b]) if callable(c) else consensus_from_logits(logits[a:b]))
                    for c, (a, b) in zip(given, bounds)]
            consensus = torch.cat([row.float().to(device) for row in rows])
        out = engine.network.run(lambda: model.decode(x, feats, consensus, side_outputs=False,
                                                      prototype_prior=prior, segments=sizes))
    maps = out.maps[:, 0].float().cpu().numpy()
    similarity = out.similarity.cpu().numpy() if out.similarity is not None else np.full(len(x), np.nan)
    embeddings = out.embeddings.float().cpu().numpy() if out.embeddings is not None else None
    prototypes = [p.float().cpu().numpy() for p in out.prototypes] if out.prototypes is not None else None
    return [GroupPrediction(
        maps=maps[a:b], similarity=similarity[a:b],
        consensus=None if consensus is None else consensus[k].cpu().numpy(),
        prototypes=None if prototypes is None else [p[a:b] for p in prototypes],
        embeddings=None if embeddings is None else embeddings[a:b],
    ) for k, (a, b) in enumerate(bounds)]


def _stacked_priors(requests: list[SegmentRequest], device: torch.device) -> list[Tensor] | None:
    """Per gate level, the requests' priors as rows [S,C_l] (zeros for a request without one; a zero prior
    is none), or None when no request has one."""
    given = [r.prior for r in requests if r.prior is not None]
    if not given:
        return None
    return [torch.stack([torch.as_tensor(r.prior[level] if r.prior is not None else np.zeros_like(given[0][level]))
                         for r in requests]).float().to(device) for level in range(len(given[0]))]
