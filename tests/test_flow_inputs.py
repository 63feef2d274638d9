"""The flows' path parameters, checked when a run starts (before any work): relative paths taken from the
serving process's folder and named absolutely, a results folder that is blank or cannot be made, empty
lists, two evaluation datasets of one folder name, a training run told to stop after no epoch."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamcosal.evaluation.nightly import distinct_datasets
from streamcosal.flows.inputs import listed_paths, results_folder, source_paths
from streamcosal.training.loop import TrainingError, train


def test_paths_are_taken_from_the_serving_folder_and_named_absolutely(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert source_paths("clips/a.mp4") == str(tmp_path / "clips" / "a.mp4")
    assert source_paths(["rtsp://cam/1", "/dev/video0", "a.mp4"]) == ["rtsp://cam/1", "/dev/video0", str(tmp_path / "a.mp4")]
    assert listed_paths(["a.mp4", "/v/b.mp4"], "videos") == [str(tmp_path / "a.mp4"), "/v/b.mp4"]
    assert results_folder("results") == str(tmp_path / "results") and (tmp_path / "results").is_dir()


@pytest.mark.parametrize(("call", "message"), [
    (lambda d: results_folder(""), "out is empty: give the folder results go to"),
    (lambda d: results_folder("  "), "out is empty"),
    (lambda d: results_folder(str(d / "a_file" / "out")), "cannot be made a results folder"),
    (lambda d: results_folder("/proc/streamcosal-out"), "cannot be made a results folder"),
    (lambda d: source_paths(""), "source is empty"),
    (lambda d: listed_paths([], "videos"), "videos is an empty list"),
    (lambda d: listed_paths("", "videos"), "videos is empty"),
    (lambda d: distinct_datasets([]), "no dataset to evaluate"),
    (lambda d: distinct_datasets(["/data/CoCA/test", "/data/CoSal2015/test"]), "share the folder name 'test'"),
])
def test_bad_path_parameters_are_refused_with_what_to_do(tmp_path: Path, call, message: str) -> None:
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match=message):
        call(tmp_path)


def test_training_refuses_to_stop_after_no_epoch(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="stop_after 0: give a number of epochs of at least 1"):
        train(tmp_path / "any.toml", stop_after=0)
