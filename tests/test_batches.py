"""Several groups' windows in one engine call (`segment_together`, `EngineBatches`): each group gets the
maps it gets alone, whatever its consensus (given, a running one, its own) and prototype prior; what
cannot share a batch runs alone; one group's error is its own; threads asking at once are served
together, each with its own result. On the CPU, with the device a parameter (a GPU runs the same code)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import group_images
from PIL import Image

from streamcosal.inference.batch import SegmentRequest, segment_together
from streamcosal.inference.engine import CoSalEngine, GroupPrediction
from streamcosal.model import consensus_from_logits
from streamcosal.run import batches
from streamcosal.run.batches import EngineBatches
from streamcosal.run.concurrent import FairLock


@pytest.fixture(scope="module")
def engine() -> CoSalEngine:
    """The default model (GIM with the shared regions' embedding, the object-prototype gate), fp32."""
    return CoSalEngine.from_pretrained(precision="fp32")


def frames(engine: CoSalEngine, data: Path, dataset: str, group: str, n: int, size: int = 224) -> torch.Tensor:
    return torch.stack([engine.prepare(np.asarray(Image.open(p).convert("RGB")), size)
                        for p in group_images(data, dataset, group, n)])


def same(a: GroupPrediction, b: GroupPrediction) -> None:
    # oneDNN picks other fp32 convolution kernels for other batch sizes: 1.4e-4 at most on an Intel Xeon with AMX
    # (2026-12-06), under 1e-4 on AMD EPYC; a tenth of a grey level either way
    assert np.abs(a.maps - b.maps).max() < 4e-4
    assert np.allclose(a.similarity, b.similarity, atol=1e-4) and np.allclose(a.consensus, b.consensus, atol=1e-6)
    assert all(np.allclose(p, q, atol=1e-5) for p, q in zip(a.prototypes, b.prototypes))
    assert np.allclose(a.embeddings, b.embeddings, atol=1e-5)


def test_groups_in_one_batch_get_the_maps_they_get_alone(engine: CoSalEngine, data: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    swan, horse, goat = (frames(engine, data, "davis2016", "blackswan", 8), frames(engine, data, "pascal_coseg", "Horse", 5),
                         frames(engine, data, "davis2016", "goat", 8))
    video = consensus_from_logits(engine.logits(frames(engine, data, "davis2016", "blackswan", 12)))
    prior = [p.sum(0) for p in engine.segment(swan, video).prototypes]  # the video's earlier windows
    added: list[int] = []

    def running(logits: torch.Tensor) -> torch.Tensor:  # a stream's consensus: adds each window once
        added.append(len(logits))
        return consensus_from_logits(logits)

    requests = [SegmentRequest(swan, video, prior), SegmentRequest(horse), SegmentRequest(goat, running)]
    alone = [engine.segment(r.x, r.consensus, r.prior) for r in requests]
    alone_calls = list(added)
    one_by_one = engine.segment
    monkeypatch.setattr(engine, "segment", lambda *a, **k: pytest.fail("a request that fits a batch ran alone"))
    together = segment_together(engine, requests)
    monkeypatch.setattr(engine, "segment", one_by_one)
    assert added == alone_calls + [8]
    for a, b in zip(alone, together):
        same(a, b)
    assert not np.allclose(alone[1].maps.mean(), alone[2].maps.mean())  # the groups' maps are their own


def test_what_cannot_share_a_batch_runs_alone_and_an_error_is_its_groups_own(engine: CoSalEngine, data: Path) -> None:
    swan = frames(engine, data, "davis2016", "blackswan", 4)
    larger = frames(engine, data, "davis2016", "goat", 4, size=256)  # another input size: a batch of its own

    def broken(logits: torch.Tensor) -> torch.Tensor:
        raise ValueError("the store of group 'broken' cannot be read")

    requests = [SegmentRequest(swan), SegmentRequest(larger), SegmentRequest(swan[:2], broken), SegmentRequest(swan[2:])]
    results = segment_together(engine, requests)
    assert isinstance(results[2], ValueError) and "group 'broken'" in str(results[2])
    for request, result in zip(requests[:2] + requests[3:], results[:2] + results[3:]):
        same(engine.segment(request.x, request.consensus, request.prior), result)


def test_threads_asking_at_once_are_served_in_one_batch_each_with_its_own_result(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[int]] = []
    queued = threading.Event()
    shared = EngineBatches(engine=None)  # type: ignore[arg-type]  (the engine call is replaced below)

    def engine_call(engine: object, requests: list[SegmentRequest]) -> list:
        calls.append([len(r.x) for r in requests])
        if len(calls) == 1:  # the first call holds the engine until the others have asked
            assert queued.wait(10)
        return [ValueError("window of 3 frames failed") if len(r.x) == 3 else
                GroupPrediction(maps=r.x.numpy(), similarity=np.zeros(len(r.x)), consensus=None) for r in requests]

    monkeypatch.setattr(batches, "segment_together", engine_call)
    lock, results = FairLock(), {}

    def ask(n: int) -> None:
        try:
            results[n] = shared.segment(torch.full((n, 1), float(n)), None, None, lock)
        except ValueError as error:
            results[n] = error

    first = threading.Thread(target=ask, args=(1,))
    first.start()
    while not calls:
        threading.Event().wait(0.01)
    others = [threading.Thread(target=ask, args=(n,)) for n in (2, 3, 4)]
    for asked, thread in enumerate(others, start=1):
        thread.start()
        while len(shared._queue) < asked:  # asked one after another: the order is known
            threading.Event().wait(0.01)
    queued.set()
    for thread in [first, *others]:
        thread.join(10)
    assert calls == [[1], [2, 3, 4]]  # the three that waited: one call, in the order asked
    assert isinstance(results[3], ValueError)  # its own error, in its own thread
    for n in (1, 2, 4):
        prediction, seconds = results[n]
        assert np.array_equal(prediction.maps, np.full((n, 1), float(n))) and seconds >= 0
