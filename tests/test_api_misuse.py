"""Library calls a programmer plausibly gets wrong: each is either done as meant or refused in one message
naming the argument (before, several gave a wrong result without a word, or failed deep inside)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import group_images
from PIL import Image
from test_pipeline import davis_video, dev_checkpoint, dev_engine  # noqa: F401  (fixtures)

from streamcosal.evaluation.evaluate import evaluate
from streamcosal.inference.engine import CoSalEngine
from streamcosal.run.archive import run_archive
from streamcosal.run.iterate import iter_results
from streamcosal.run.pipeline import run_pipeline
from streamcosal.run.records import PipelineConfig


def test_one_source_given_as_a_string_or_a_generator_is_run(data: Path, dev_engine: CoSalEngine,  # noqa: F811
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run_pipeline("clip.mp4", ...)` ran each letter as a source ("." the current folder, whose photos went
    into the results); a generator of sources ran nothing and reported success."""
    clip, _ = davis_video(data, tmp_path, "goat")
    Image.open(group_images(data, "pascal_coseg", "Cat", 1)[0]).save(tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    for given in (clip.name, (name for name in [clip.name])):
        report = run_pipeline(given, tmp_path / "out", dev_engine, PipelineConfig(window=4))
        assert [(s.source, s.status, s.frames) for s in report.sources] == [(clip.name, "done", 8)]


def test_a_stopped_iteration_closes_the_video_file(data: Path, dev_engine: CoSalEngine,  # noqa: F811
                                                    tmp_path: Path) -> None:
    """Breaking out of `iter_results` left the video open (decord's reader) until the garbage collector ran."""
    clip, _ = davis_video(data, tmp_path, "goat")
    with iter_results([clip], tmp_path / "out", dev_engine, PipelineConfig(window=4)) as results:
        for i, _ in enumerate(results):
            if i == 1:
                break
    assert [p for p in map(os.readlink, (f"/proc/self/fd/{fd}" for fd in os.listdir("/proc/self/fd")
                                           if os.path.exists(f"/proc/self/fd/{fd}"))) if p == str(clip)] == []


def test_segment_takes_its_inputs_as_documented_or_says_what_is_wrong(data: Path,
                                                                     dev_engine: CoSalEngine) -> None:  # noqa: F811
    images = [np.asarray(Image.open(p).convert("RGB")) for p in group_images(data, "pascal_coseg", "Cat", 4)]
    x = torch.stack([dev_engine.prepare(image, 128) for image in images])
    pred = dev_engine.segment(x)
    # the consensus as GroupPrediction gives it (an array) is used, as a tensor is (an array was ignored)
    other = dev_engine.segment(torch.flip(x, dims=[0])[:2]).consensus
    with_array, with_tensor = dev_engine.segment(x, other), dev_engine.segment(x, torch.from_numpy(other))
    assert np.array_equal(with_array.maps, with_tensor.maps) and np.array_equal(with_array.consensus, other)
    for wrong, says in ((x.numpy(), r"segment takes x as a torch tensor \[N,3,S,S\] in \[0,1\] .*got ndarray"),
                        (x.permute(0, 2, 3, 1),
                         r"segment takes x \[N,3,S,S\] \(RGB, channels first\), got shape \(4, 128, 128, 3\)"),
                        (x[:, :1], r"got shape \(4, 1, 128, 128\)"),
                        ((x * 255).to(torch.uint8), r"in \[0,1\] as floats, got torch.uint8: divide by 255")):
        with pytest.raises((TypeError, ValueError), match=says):
            dev_engine.segment(wrong)
    for consensus, says in ((np.zeros((4, 1000), np.float32), r"one for the group, \[1,1000\] .*got shape \(4, 1000\)"),
                            (torch.zeros(1, 10), r"got shape \(1, 10\)"), ([0.1] * 1000, "got list")):
        with pytest.raises((TypeError, ValueError), match=says):
            dev_engine.segment(x, consensus)
    for args, says in (((pred.maps[:1], images[0]), r"one map \[S,S\] \(maps\[i\]\), got shape \(1, 128, 128\)"),
                       ((pred.maps[0], images[0][..., 0]), r"HxWx3 uint8 RGB, got shape"),
                       ((pred.maps[0], None), "upsample needs the map's frame")):
        with pytest.raises(ValueError, match=says):
            dev_engine.upsample(*args)


def test_run_archive_takes_an_engine_spec_and_evaluate_a_group_list(data: Path, dev_engine: CoSalEngine,  # noqa: F811
                                                                      tmp_path: Path) -> None:
    """A built engine given to run_archive (an AttributeError deep inside); `groups=[]` to evaluate (an IndexError)."""
    with pytest.raises(TypeError, match="run_archive takes engine as an EngineSpec .*got CoSalEngine"):
        run_archive([str(tmp_path / "a.mp4")], tmp_path / "out", dev_engine)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=r"no group to evaluate \(groups is empty\): name some of \['Bicycle'"):
        evaluate(tmp_path, data / "pascal_coseg", groups=[])
