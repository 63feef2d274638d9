"""The running object prototype: what the pipeline's windows are gated against."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from conftest import group_images
from PIL import Image

from streamcosal.inference.engine import CoSalEngine, GroupPrediction
from streamcosal.io.frame import Frame
from streamcosal.run.prototypes import RunningPrototype
from streamcosal.run.windows import Window
from streamcosal.training.jigsaw import jigsaw
from streamcosal.training.validation import ValGroup, score


def window(times: list[float], emit: list[bool]) -> Window:
    frames = [Frame(np.zeros((2, 2, 3), np.uint8), i, t, "cam") for i, t in enumerate(times)]
    return Window(0, frames, emit)


def prediction(*levels: list[list[float]]) -> GroupPrediction:
    n = len(levels[0])
    return GroupPrediction(np.zeros((n, 2, 2), np.float32), np.zeros(n, np.float32), None,
                           [np.asarray(level, np.float32) for level in levels])


def test_running_prototype_sums_emitted_frames_and_decays_with_stream_time() -> None:
    running = RunningPrototype(half_life=10.0)
    running.add(window([0.0, 1.0], [True, True]), prediction([[1, 0], [0, 1]], [[1], [1]]))
    np.testing.assert_allclose(running.sums[0], [1, 1])
    np.testing.assert_allclose(running.sums[1], [2])
    # the context frame (emit False) was added before; 10 s later the old sums weigh half
    running.add(window([1.0, 11.0], [False, True]), prediction([[0, 1], [4, 0]], [[1], [1]]))
    np.testing.assert_allclose(running.sums[0], [0.5 + 4, 0.5])
    np.testing.assert_allclose(running.sums[1], [2])
    running.add(window([5.0], [True]), prediction([[1, 1]], [[1]]))  # time going back does not grow old sums
    np.testing.assert_allclose(running.sums[0], [5.5, 1.5])
    whole = RunningPrototype()  # a whole video, or images (NaN times): no decay
    for _ in range(2):
        whole.add(window([float("nan")], [True]), prediction([[1, 0]], [[1]]))
    np.testing.assert_allclose(whole.sums[0], [2, 0])
    ungated = RunningPrototype()
    ungated.add(window([0.0], [True]), GroupPrediction(np.zeros((1, 2, 2)), np.zeros(1), None))
    assert ungated.sums is None


def test_a_windows_context_frames_weigh_once_with_overlapping_windows() -> None:
    """A context frame (emit False) was added to the sums when it was emitted, and the window's own
    prototypes hold it again: the prior leaves out its remembered, decayed share."""
    image = np.zeros((2, 2, 3), np.uint8)
    running = RunningPrototype(half_life=10.0, recent=2)
    first = Window(0, [Frame(image, 0, 0.0, "cam"), Frame(image, 1, 10.0, "cam")], [True, True])
    running.add(first, prediction([[1, 0], [0, 1]]))
    second = Window(1, [Frame(image, 1, 10.0, "cam"), Frame(image, 2, 20.0, "cam")], [False, True])
    np.testing.assert_allclose(running.prior(second)[0], [1, 0])  # frame 1 left out, frame 0 kept
    running.add(second, prediction([[0, 1], [2, 0]]))  # 10 s later: the sums and the remembered shares halve
    np.testing.assert_allclose(running.sums[0], [2.5, 0.5])
    third = Window(2, [Frame(image, 2, 20.0, "cam"), Frame(image, 3, 30.0, "cam")], [False, True])
    np.testing.assert_allclose(running.prior(third)[0], [0.5, 0.5])
    assert list(running.recent) == [("cam", 1), ("cam", 2)]  # the latest `recent` emitted frames
    np.testing.assert_allclose(running.prior(first)[0], running.sums[0])  # no context frame: the sums
    assert RunningPrototype().prior(first) is None


def composites(data: Path, target: str, n: int) -> ValGroup:
    """n jigsaws: a frame of ``target`` joined with a frame of another DAVIS video (9 in turn);
    the mask is the target's object only."""
    others = ["blackswan", "goat", "libby", "car-roundabout", "breakdance", "horsejump-high", "dance-twirl",
              "motocross-jump", "paragliding-launch", "scooter-black"]
    others.remove(target)
    rng = np.random.default_rng(0)
    images, masks = [], []
    for i, path in enumerate(group_images(data, "davis2016", target, n)):
        partner = np.asarray(Image.open(group_images(data, "davis2016", others[i * 3 % len(others)], n)[i]).convert("RGB"))
        mask = np.asarray(Image.open(data / "davis2016" / "masks" / target / f"{path.stem}.png").convert("L")) > 128
        image, truth = jigsaw(np.asarray(Image.open(path).convert("RGB")), mask.astype(np.uint8), partner, 224, rng)
        images.append(image)
        masks.append(truth * 255)
    return ValGroup("composites", target, torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2), masks)


def test_single_frames_gated_against_the_running_prototype_find_the_common_object(data: Path) -> None:
    """A stream at its lowest latency segments one frame at a time: gated against its own prototype
    only, a frame is compared with itself; against the running prototype of the frames before, with
    the video's object. Three groups of 12 jigsaws, each frame against its group's consensus (as a
    consensus store gives it). Measured maxF, the three pooled: 0.380 alone, 0.435 running (each
    alone: dance-twirl 0.377 / 0.473, breakdance 0.421 / 0.476, scooter-black 0.356 / 0.376)."""
    engine = CoSalEngine.from_pretrained(device="cpu")
    groups = [composites(data, target, 12) for target in ("dance-twirl", "breakdance", "scooter-black")]

    def frame_by_frame(x: torch.Tensor, running: RunningPrototype | None) -> np.ndarray:
        x = x.float() / 255
        consensus = torch.from_numpy(engine.segment(x).consensus)[None]
        maps = []
        for i in range(len(x)):
            pred = engine.segment(x[i:i + 1], consensus, None if running is None else running.sums)
            if running is not None:
                running.add(window([i / 10], [True]), pred)
            maps.append(pred.maps[0])
        return np.stack(maps)

    alone = score(lambda x: frame_by_frame(x, None), groups)["composites_maxF"]
    running = score(lambda x: frame_by_frame(x, RunningPrototype(half_life=30.0)), groups)["composites_maxF"]
    assert running >= alone + 0.04, f"maxF {running:.3f} against the running prototype, {alone:.3f} alone"
