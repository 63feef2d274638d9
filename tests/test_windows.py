"""Windows: global and streaming modes, consensus sampling, multi-source interleave."""

from __future__ import annotations

import math
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from test_pipeline import davis_video, dev_checkpoint, dev_engine  # noqa: F401  (fixtures)
from video_fixtures import DAVIS_IMAGES, davis_frames, encode_video

from streamcosal.io.frame import Frame, SourceError
from streamcosal.io.open import open_source
from streamcosal.params import CPU_WINDOW, GPU_WINDOW, RunParams
from streamcosal.run.pipeline import run_pipeline
from streamcosal.run.records import PipelineConfig
from streamcosal.run.windows import (
    frames_per_window,
    global_windows,
    interleave,
    sample_consensus_frames,
    streaming_windows,
)
from streamcosal.storage import decode_mask, read_results

TINY = np.zeros((2, 2, 3), np.uint8)


def fake_frames(n: int, source: str = "cam", fps: float = 10.0, start: float = 0.0) -> list[Frame]:
    return [Frame(image=TINY, index=i, timestamp=start + i / fps, source=source) for i in range(n)]


def test_global_windows_cover_every_frame_once():
    windows = list(global_windows(fake_frames(10), window=4))
    assert [len(w) for w in windows] == [4, 4, 2]
    assert [w.index for w in windows] == [0, 1, 2]
    assert [f.index for w in windows for f in w.emitted] == list(range(10))


@pytest.mark.parametrize(("n", "window", "stride"), [(10, 4, 4), (10, 4, 2), (11, 5, 3), (3, 5, 2), (9, 3, 1)])
def test_streaming_windows_emit_each_frame_once(n, window, stride):
    windows = list(streaming_windows(fake_frames(n), window=window, stride=stride))
    emitted = [f.index for w in windows for f in w.emitted]
    assert emitted == list(range(n))  # once each, in order
    assert all(len(w) == min(window, n) for w in windows)  # last window padded with earlier frames
    for w in windows:
        indices = [f.index for f in w.frames]
        assert indices == list(range(indices[0], indices[0] + len(w)))  # consecutive frames
        assert w.emit == sorted(w.emit)  # context first, new frames last


def test_streaming_overlap_counts_first_window():
    first, second = list(streaming_windows(fake_frames(6), window=4, stride=2))
    assert [f.index for f in first.frames] == [0, 1, 2, 3] and all(first.emit)
    assert [f.index for f in second.frames] == [2, 3, 4, 5]
    assert second.emit == [False, False, True, True]  # 2 and 3 already counted in window 0


def test_window_arguments_are_checked():
    with pytest.raises(ValueError, match="stride"):
        list(streaming_windows(fake_frames(3), window=2, stride=3))
    with pytest.raises(ValueError, match="window"):
        list(global_windows(fake_frames(3), window=0))


def test_sample_consensus_frames_spans_the_whole_video(tmp_path):
    frames = davis_frames("dance-twirl", n=40, size=(96, 64))
    encode_video(frames, tmp_path / "v.mp4", fps=20)
    with open_source(tmp_path / "v.mp4", stride=4) as source:
        consensus = sample_consensus_frames(source, 8)
        sampled = list(source)
    assert [f.index for f in consensus] == [0, 6, 11, 17, 22, 28, 33, 39]
    assert consensus[-1].timestamp == pytest.approx(39 / 20, abs=1e-6)
    assert len(sampled) == 10  # iteration is independent of the random access
    with open_source(tmp_path / "v.mp4", reader="pyav") as source:
        assert [f.index for f in sample_consensus_frames(source, 100)] == list(range(40))


def test_sample_consensus_frames_from_images_and_not_from_live():
    paths = sorted((DAVIS_IMAGES / "goat").iterdir())[:9]
    with open_source(paths) as source:
        assert [f.index for f in sample_consensus_frames(source, 3)] == [0, 4, 8]

    class Live:
        name = "rtsp://camera"
        info = type("Info", (), {"frame_count": None})()

    with pytest.raises(SourceError, match="rtsp://camera: frame count unknown"):
        sample_consensus_frames(Live(), 4)  # type: ignore[arg-type]


def test_interleave_orders_by_timestamp_with_every_source():
    cam_a = fake_frames(6, "a", fps=10.0)
    cam_b = fake_frames(6, "b", fps=10.0, start=0.05)
    windows = list(interleave([cam_a, cam_b], frames_per_source=2))
    assert len(windows) == 3
    assert all(w.sources == ["a", "b"] for w in windows)
    times = [f.timestamp for w in windows for f in w.frames]
    assert times == sorted(times)
    assert [(f.source, f.index) for f in windows[0].frames] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]


def test_interleave_round_robin_without_timestamps_and_uneven_lengths():
    nan = [Frame(TINY, i, math.nan, "img") for i in range(3)]
    cam = fake_frames(5, "cam", start=100.0)
    windows = list(interleave([nan, cam], frames_per_source=2))
    assert [(f.source, f.index) for f in windows[0].frames] == [("img", 0), ("cam", 0), ("img", 1), ("cam", 1)]
    assert [(f.source, f.index) for f in windows[1].frames] == [("img", 2), ("cam", 2), ("cam", 3)]
    assert [(f.source, f.index) for f in windows[2].frames] == [("cam", 4)]  # the other source goes on
    assert sum(len(w.emitted) for w in windows) == 8


def test_a_runs_window_is_its_devices_unless_asked(data, dev_engine, tmp_path):
    """The default window: 32 frames for files on a GPU (one engine call that fills it), 8 on a CPU and for
    live sources, or a streaming run's step where that is larger; a window asked for is kept."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [frames_per_window(None, None, device, live=False) for device in (cpu, cuda)] == [CPU_WINDOW, GPU_WINDOW]
    assert (CPU_WINDOW, GPU_WINDOW) == (8, 32) and frames_per_window(None, None, cuda, live=True) == 8
    assert frames_per_window(None, 40, cuda, live=False) == 40 and frames_per_window(5, None, cuda, live=False) == 5
    assert RunParams().result_params()["window"] == RunParams(window=8).result_params()["window"] == 8  # archive keys
    path, _ = davis_video(data, tmp_path, "goat", n=20)
    for config, frames_by_window in ((PipelineConfig(mode="global", consensus_frames=4), [8, 8, 4]),
                                     (PipelineConfig(mode="streaming", step=12), [12, 8])):
        assert config.window is None
        report = run_pipeline([path], tmp_path / config.mode, dev_engine, config)
        assert report.exit_code == 0 and report.frames == 20
        windows = Counter(row["window"] for row in read_results(tmp_path / config.mode).to_pylist())
        assert [windows[i] for i in sorted(windows)] == frames_by_window, windows


def test_frames_resized_in_the_runs_host_threads_give_the_same_rows(data, dev_engine, tmp_path, monkeypatch):
    """As a run on a GPU engine does (`prepare_in_threads`, by default there): each window's frames resized in the
    run's host threads, not in the group's prefetch thread alone; the rows are the same."""
    path, _ = davis_video(data, tmp_path, "blackswan", n=12)
    prepare, threads = dev_engine.prepare, set()

    def recorded(image: np.ndarray, size: int | None = None) -> torch.Tensor:
        threads.add(threading.current_thread().name)
        return prepare(image, size)

    monkeypatch.setattr(dev_engine, "prepare", recorded)
    rows, names = {}, {}
    for in_threads in (False, True):
        threads.clear()
        config = PipelineConfig(mode="global", window=4, consensus_frames=4, prepare_in_threads=in_threads)
        assert run_pipeline([path], tmp_path / str(in_threads), dev_engine, config).exit_code == 0
        rows[in_threads] = sorted(read_results(tmp_path / str(in_threads)).to_pylist(), key=lambda r: r["frame_index"])
        names[in_threads] = {name.split("_")[0] for name in threads}
    assert "streamcosal-host" in names[True] and "streamcosal-host" not in names[False], names
    assert "streamcosal-prefetch" in names[False]
    assert len(rows[True]) == len(rows[False]) == 12
    for a, b in zip(rows[False], rows[True]):
        assert np.array_equal(decode_mask(a), decode_mask(b)) and a["mean_prob"] == b["mean_prob"], a["frame_index"]
