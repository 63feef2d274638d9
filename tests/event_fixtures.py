"""Videos with known events, and an engine whose object comes and goes with them (for the tests of
results as they happen: callbacks, iterators, webhook and MQTT delivery).

The engine is the small development engine of test_pipeline (Lite0, untrained decoder, 64 px), whose
maps sit near 0.48 everywhere; its `segment` is wrapped so that the object is the right half of every
frame that is not dark (maps kept there, zero elsewhere), upsampled bilinearly. With ``threshold`` 0.3 a
bright frame's mask is its right half (area about 0.5) and a dark frame's is empty, so the events are where the video's
bright frames are: real decoding, engine, sink, tracker and storage, events chosen by the test.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_pipeline import dev_checkpoint  # noqa: F401  (fixture)
from torch import Tensor
from video_fixtures import davis_frames, encode_video

from streamcosal.inference.engine import CoSalEngine, GroupPrediction
from streamcosal.io.open import open_source
from streamcosal.run.records import PipelineConfig

SIZE = (160, 96)  # (width, height) of the test videos
FPS = 10
DARK = 0.05  # an input frame darker than this on average: the object is gone
THRESHOLD = 0.3  # the mask threshold that makes a bright frame's mask its right half


def presence_engine(checkpoint: Path) -> CoSalEngine:
    """The development engine of ``checkpoint``, its object the right half of each frame that is not dark."""
    engine = CoSalEngine.from_checkpoint(checkpoint, upsampling="bilinear")  # the mask's edge where the map's is
    segment = engine.segment

    def with_presence(x: Tensor, consensus: object = None, prototype_prior: object = None) -> GroupPrediction:
        prediction = segment(x, consensus, prototype_prior)
        maps = prediction.maps.copy()
        maps[:, :, : maps.shape[2] // 2] = 0.0
        maps[x.float().mean(dim=(1, 2, 3)).cpu().numpy() < DARK] = 0.0
        return replace(prediction, maps=maps)

    engine.segment = with_presence  # type: ignore[method-assign]
    return engine


def events_video(path: Path, pattern: str = "BBBBBBddddddBBBBBB", video: str = "goat") -> Path:
    """An H.264 clip at `FPS` (SIZE) whose frames follow ``pattern``: B a DAVIS frame, d a dark one. The default
    has two events: frames 0-5 and 12-17 (0.6 s of absence between them, more than the default 0.5 s gap)."""
    bright = iter(davis_frames(video, n=pattern.count("B"), size=SIZE))
    frames = [next(bright) if c == "B" else np.zeros((SIZE[1], SIZE[0], 3), np.uint8) for c in pattern]
    encode_video(frames, path, fps=FPS)
    return path


def config(**settings: object) -> PipelineConfig:
    """The runs' settings: windows of 4, the presence threshold, whatever the test adds."""
    return PipelineConfig(**{"window": 4, "consensus_frames": 4, "threshold": THRESHOLD, **settings})


def decoded_frame(path: Path, index: int) -> np.ndarray:
    """Frame ``index`` of a video as the pipeline decodes it: [H,W,3] uint8 RGB."""
    with open_source(path) as source:
        return next(f.image for f in source if f.index == index)


def looks_highlighted(shown: np.ndarray, frame: np.ndarray) -> bool:
    """Whether ``shown`` ([H,W,3] uint8 RGB, e.g. a decoded snapshot) is ``frame`` with its right half tinted in
    the overlay's red (`OverlayStyle`): redder there than the frame, about the frame elsewhere."""
    def redness(image: np.ndarray) -> float:
        return float(np.mean(image[..., 0] - image[..., 1]))

    shown, frame = shown.astype(np.float32), frame.astype(np.float32)
    half = frame.shape[1] // 2
    tinted = redness(shown[:, half + 3:]) - redness(frame[:, half + 3:])
    untouched = float(np.mean(np.abs(shown[3:-3, 3: half - 6] - frame[3:-3, 3: half - 6])))
    return tinted > 40 and untouched < 12


@pytest.fixture(scope="module")
def engine(dev_checkpoint: Path) -> CoSalEngine:  # noqa: F811
    """:func:`presence_engine` of the development checkpoint."""
    return presence_engine(dev_checkpoint)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`events_video`'s default: the object present in frames 0-5 and 12-17."""
    return events_video(tmp_path_factory.mktemp("videos") / "goat.mp4")
