"""A group's answer says when it cannot be trusted: one image, two different objects, no object."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import group_images
from PIL import Image
from video_fixtures import encode_video, load_frames

from streamcosal import CoSalEngine
from streamcosal.inference.agreement import group_agreement
from streamcosal.run.images import segment_folders
from streamcosal.run.pipeline import run_pipeline
from streamcosal.run.records import PipelineConfig


@pytest.fixture(scope="module")
def engine() -> CoSalEngine:
    return CoSalEngine.from_pretrained(device="cpu")


def _folder(root: Path, name: str, images: list[Path]) -> Path:
    (root / name).mkdir(parents=True)
    for image in images:
        (root / name / f"{image.parent.name}-{image.name}").symlink_to(image)
    return root / name


def test_two_different_objects_are_split_and_one_object_is_not(engine: CoSalEngine, data: Path) -> None:
    cats, bikes = group_images(data, "pascal_coseg", "Cat", 8), group_images(data, "pascal_coseg", "Bicycle", 4)
    mixed = engine.segment(_stack(engine, cats[:4] + bikes))
    agreement = group_agreement(mixed.embeddings)
    assert agreement is not None and agreement.uncertain
    assert sorted(map(sorted, agreement.halves)) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    same = group_agreement(engine.segment(_stack(engine, cats)).embeddings)
    assert same is not None and not same.uncertain and same.ratio > agreement.ratio


def _stack(engine: CoSalEngine, paths: list[Path]) -> torch.Tensor:
    """The images at 224 px, prepared for the engine: [N,3,224,224]."""
    return torch.stack([engine.prepare(np.asarray(Image.open(p).convert("RGB")), 224) for p in paths])


def test_agreement_needs_four_images_and_a_spread() -> None:
    rng = np.random.default_rng(0)
    assert group_agreement(rng.normal(size=(3, 16))) is None
    assert group_agreement(np.ones((6, 16))) is None


def test_folder_notes_name_the_uncertain_the_lonely_and_the_empty_group(engine: CoSalEngine, data: Path,
                                                                          tmp_path: Path) -> None:
    cats, bikes = group_images(data, "pascal_coseg", "Cat", 4), group_images(data, "pascal_coseg", "Bicycle", 4)
    horses = group_images(data, "pascal_coseg", "Horse", 6)
    src = tmp_path / "in"
    _folder(src, "mixed", cats + bikes)
    _folder(src, "horses", horses)
    _folder(src, "alone", horses[:1])
    (src / "blank").mkdir()
    (src / "noise").mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(np.full((120, 160, 3), 100 + 20 * i, np.uint8)).save(src / "blank" / f"{i}.png")
    for i in range(6):  # noise whose maps reach 0.5 on a few pixels at most (2 of 720,000 in bf16, none in fp32)
        Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)[..., ::-1]).save(src / "noise" / f"{i}.png")
    report = segment_folders(src, tmp_path / "out", engine)
    assert report.ok and report.maps == 8 + 6 + 1 + 4 + 6
    notes = "\n".join(report.notes)
    assert "group 'mixed' is uncertain" in notes and f"Cat-{cats[0].name}" in notes and f"Bicycle-{bikes[0].name}" in notes
    assert "'horses'" not in notes
    assert f"group 'alone' has one image (Horse-{horses[0].name})" in notes
    assert "group 'blank': no common object found" in notes
    assert "group 'noise': no common object found" in notes  # a speck of a few pixels is no object
    assert "group 'horses': no common object" not in notes and "group 'mixed': no common object" not in notes


def test_video_groups_say_when_their_frames_show_two_objects_one_frame_or_none(engine: CoSalEngine, data: Path,
                                                                                tmp_path: Path) -> None:
    """Through the video pipeline: a recording that cuts from the goat to the car is uncertain (its halves
    named by frame), the goat alone is not; a one-frame video and a blank video say so."""
    goat = load_frames(data / "davis2016" / "images" / "goat", max_frames=16, size=(320, 180))
    car = load_frames(data / "davis2016" / "images" / "car-roundabout", max_frames=16, size=(320, 180))
    encode_video(goat + car, tmp_path / "cut.mp4", fps=8)
    encode_video(goat, tmp_path / "goat.mp4", fps=8)
    encode_video(goat[:1], tmp_path / "still.mp4", fps=8)
    encode_video([np.full((180, 320, 3), 90, np.uint8)] * 8, tmp_path / "blank.mp4", fps=8)
    sources = [tmp_path / f"{name}.mp4" for name in ("cut", "goat", "still", "blank")]
    report = run_pipeline(sources, tmp_path / "out", engine, PipelineConfig(mode="global", window=8, consensus_frames=8))
    assert [s.status for s in report.sources] == ["done"] * 4
    notes = "\n".join(report.notes)
    assert "group 'cut' is uncertain: its frames look like two different objects" in notes
    assert "cut.mp4 frames 0-15" in notes and "cut.mp4 frames 16-31" in notes  # the two scenes, as halves
    assert "group 'goat'" not in notes
    assert "group 'still' has one frame" in notes
    assert "group 'blank': no common object found" in notes
