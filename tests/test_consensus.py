"""Consensus strategies on real classifier logits: streaming and global on one scale; no time, no decay."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from video_fixtures import davis_frames

from streamcosal.inference.engine import CoSalEngine
from streamcosal.io.frame import Frame, SourceError
from streamcosal.io.open import open_source
from streamcosal.model import consensus_from_logits
from streamcosal.run.consensus import SAMPLE_CHUNK, GlobalConsensus, StreamingConsensus
from streamcosal.run.windows import Window, sample_consensus_frames
from streamcosal.storage import ConsensusStore

# breakdance: EfficientNet-Lite0's classifier splits its 32 frames between two classes (0.66 / 0.34),
# so a consensus too sharp shows; most DAVIS videos give one class with probability ~1 either way.
VIDEO, FRAMES = "breakdance", 32


@pytest.fixture(scope="module")
def engine() -> CoSalEngine:
    return CoSalEngine.from_pretrained("efficientnet_lite0")


@pytest.fixture(scope="module")
def logits(data, engine) -> torch.Tensor:
    """[32,1000] logits of the default model's classifier for 32 DAVIS frames."""
    return engine.logits(torch.stack([engine.prepare(f) for f in davis_frames(VIDEO, FRAMES)]))


def frames_window(index: int, first: int, n: int, fps: float | None) -> Window:
    """Window `index` of n frames starting at frame `first`; timestamps at fps (NaN without)."""
    image = np.zeros((2, 2, 3), np.uint8)
    frames = [Frame(image, i, i / fps if fps else math.nan, "cam") for i in range(first, first + n)]
    return Window(index, frames, [True] * n)


def test_steady_stream_consensus_equals_global_consensus(logits, tmp_path):
    """40 s of a 25 fps camera showing the same 32 frames over and over, 30 s half-life (about
    1,000 frames of evidence): its consensus is the global consensus of those 32 frames."""
    expected = torch.softmax(logits.sum(0), 0)  # GICD's consensus of the group of 32 frames
    assert expected.max() < 0.9  # not one-hot: a sharper consensus would show

    store = ConsensusStore(tmp_path / "stream.npz")
    streaming = StreamingConsensus("cam", store, half_life=30.0)
    window = 8
    for k in range(25 * 40 // window):
        rows = [(k * window + i) % FRAMES for i in range(window)]
        consensus = streaming(frames_window(k, k * window, window, fps=25.0))(logits[rows])
    assert store.state("cam").n > 500  # the evidence of hundreds of frames
    np.testing.assert_allclose(consensus[0].numpy(), expected.numpy(), atol=0.02)
    np.testing.assert_allclose(store.consensus("cam"), expected.numpy(), atol=0.02)


def test_global_consensus_of_sampled_frames_is_kept_in_the_store(data, engine, tmp_path):
    """GICD's consensus of frames sampled over the group (classified in chunks, each decoded while
    the one before is classified): that of the whole sample at once; the store keeps the same."""
    paths = sorted((data / "davis2016" / "images" / VIDEO).glob("*.jpg"))[:40]
    store = ConsensusStore(tmp_path / "s.npz")
    chunks: list[int] = []

    def logits(x: torch.Tensor) -> torch.Tensor:
        chunks.append(len(x))
        return engine.logits(x)

    with open_source(paths) as source:
        strategy = GlobalConsensus.sample("g", [source], FRAMES, lambda f: engine.prepare(f.image), logits, store)
        sample = torch.stack([engine.prepare(f.image) for f in sample_consensus_frames(source, FRAMES)])
    consensus = strategy(frames_window(0, 0, 1, None))
    assert chunks == [SAMPLE_CHUNK] * (FRAMES // SAMPLE_CHUNK)
    np.testing.assert_allclose(consensus.numpy(), consensus_from_logits(engine.logits(sample)).numpy(), atol=1e-6)
    assert consensus.shape == (1, 1000) and store.state("g").n == FRAMES
    np.testing.assert_allclose(consensus[0].numpy(), store.consensus("g"), atol=1e-5)


def test_a_group_whose_sampled_frames_cannot_be_read_names_the_group(data, engine, tmp_path):
    """The consensus sample's frames are all unreadable (the folder's first and last image, the other
    one readable): a SourceError naming the group, and nothing put in the store."""
    good = sorted((data / "davis2016" / "images" / VIDEO).glob("*.jpg"))[0]
    paths = [tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "c.jpg"]
    paths[0].write_bytes(b"not a jpeg")
    paths[1].write_bytes(good.read_bytes())
    paths[2].write_bytes(b"not a jpeg either")
    store = ConsensusStore(tmp_path / "s.npz")
    with open_source(paths) as source, pytest.raises(SourceError, match="group 'g': no frame could be read"):
        GlobalConsensus.sample("g", [source], 2, lambda f: engine.prepare(f.image), engine.logits, store)
    assert store.groups() == []


def test_frames_without_timestamps_do_not_decay(logits, tmp_path):
    """Images have no time: the streaming consensus of an image folder weighs every image alike
    (it used to take window numbers for seconds and decay by them)."""
    store = ConsensusStore(tmp_path / "s.npz")
    streaming = StreamingConsensus("images", store, half_life=30.0)
    for k in range(4):
        streaming(frames_window(k, 8 * k, 8, fps=None))(logits[8 * k : 8 * k + 8])
    state = store.state("images")
    assert state.n == 32 and state.t == 0.0
    np.testing.assert_allclose(state.sums, logits.double().sum(0).numpy(), rtol=1e-9, atol=1e-9)
