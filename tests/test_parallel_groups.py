"""An archive's videos processed a few at once (`parallel_groups`): the same results as one after
another, in as many threads as asked, a broken file failing alone; on the CPU the device is a
parameter like any other (a GPU engine's default is `GPU_FILES_AT_ONCE`)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from test_pipeline import davis_video, dev_checkpoint, dev_engine  # noqa: F401  (fixtures)

from streamcosal.inference.engine import CoSalEngine
from streamcosal.run import batches
from streamcosal.run.batches import EngineBatches
from streamcosal.run.pipeline import run_pipeline
from streamcosal.run.records import PipelineConfig
from streamcosal.storage import decode_mask, read_results

VIDEOS = ("blackswan", "goat", "car-roundabout", "libby")


@pytest.fixture(scope="module")
def videos(data, tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("parallel")
    return [davis_video(data, folder, name, n=12)[0] for name in VIDEOS]


def run(videos: list[Path], out: Path, engine: CoSalEngine, monkeypatch: pytest.MonkeyPatch,
        **settings: object) -> tuple[dict, list[str], list[int]]:
    """Rows by (source, frame), the name of the thread of each window's engine call, and the windows of
    each batched engine call (groups at once)."""
    threads: list[str] = []
    batched: list[int] = []
    segment, ask, together = engine.segment, EngineBatches.segment, batches.segment_together

    def recorded(*args: object, **kwargs: object):
        threads.append(threading.current_thread().name)
        return segment(*args, **kwargs)

    def asked(*args: object, **kwargs: object):
        threads.append(threading.current_thread().name)
        return ask(*args, **kwargs)

    def batch(engine: CoSalEngine, requests: list) -> list:
        batched.append(len(requests))
        return together(engine, requests)

    monkeypatch.setattr(engine, "segment", recorded)
    monkeypatch.setattr(EngineBatches, "segment", asked)
    monkeypatch.setattr(batches, "segment_together", batch)
    config = PipelineConfig(mode="global", window=4, consensus_frames=6, **settings)
    report = run_pipeline(videos, out, engine, config)
    monkeypatch.undo()
    assert report.exit_code == 0 and [s.status for s in report.sources] == ["done"] * len(videos)
    rows = {(r["source"], r["frame_index"]): r for r in read_results(out).to_pylist()}
    return rows, threads, batched


def test_videos_at_once_give_the_results_of_one_after_another(videos, dev_engine, tmp_path, monkeypatch):
    alone, alone_threads, alone_batched = run(videos, tmp_path / "one", dev_engine, monkeypatch)
    together, together_threads, batched = run(videos, tmp_path / "three", dev_engine, monkeypatch, parallel_groups=3,
                                              batch_groups=True)  # as on a GPU
    assert set(alone_threads) == {threading.current_thread().name} and not alone_batched  # a CPU's default
    # three workers, each naming the group it runs; every group's windows asked for in one of them
    assert {name for name in together_threads} == {f"streamcosal-group {v}" for v in VIDEOS}
    assert sum(batched) == 3 * len(VIDEOS), batched  # every window through the batches: 3 a video
    assert len(alone) == len(together) == 12 * len(VIDEOS)
    for key, row in alone.items():
        other = together[key]
        assert np.array_equal(decode_mask(row), decode_mask(other)), key
        assert row["group"] == other["group"] and row["mean_prob"] == pytest.approx(other["mean_prob"], abs=1e-6)


def test_workers_take_the_next_video_when_one_is_done(videos, dev_engine, tmp_path, monkeypatch):
    seen: list[int] = []
    segment = dev_engine.segment

    def recorded(*args: object, **kwargs: object):
        seen.append(threading.get_ident())
        return segment(*args, **kwargs)

    monkeypatch.setattr(dev_engine, "segment", recorded)
    report = run_pipeline(videos, tmp_path / "out", dev_engine,
                          PipelineConfig(mode="global", window=4, consensus_frames=6, parallel_groups=2))
    assert report.frames == 12 * len(VIDEOS)
    assert len(set(seen)) == 2  # four videos, two threads


def test_a_broken_file_fails_alone(videos, dev_engine, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(videos[0].read_bytes()[:2000])  # the header and no frame
    sources = [videos[0], broken, videos[1]]
    report = run_pipeline(sources, tmp_path / "out", dev_engine,
                          PipelineConfig(mode="global", window=4, consensus_frames=6, parallel_groups=3))
    status = {Path(s.source).name: s for s in report.sources}
    assert status["broken.mp4"].status == "failed" and "broken" in (status["broken.mp4"].error or "")
    assert status[videos[0].name].status == status[videos[1].name].status == "done"
    assert status[videos[0].name].frames == status[videos[1].name].frames == 12
    assert report.exit_code != 0


def test_parallel_groups_change_no_archive_key():
    assert PipelineConfig(parallel_groups=4).result_params() == PipelineConfig().result_params()


def test_a_signal_during_the_wait_still_waits_for_every_group():
    """Ctrl-C lands while the main thread waits for the group threads (as it does all run long): each group
    still finishes its window and is waited for before the signal is raised again. (On Python < 3.13 a
    `Thread.join` cut by a signal can mark a thread that still runs as ended; the interpreter would then
    exit under a group inside the engine and abort: "terminate called without an active exception".)"""
    import signal
    import time

    from streamcosal.run.concurrent import run_concurrently

    finished: list[str] = []

    class Job:
        together = None

        def run_group(self, group, specs, runs):
            while not self.together.stop.is_set():
                time.sleep(0.01)
            time.sleep(0.5)  # the window in the engine when the stop came
            finished.append(group)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        for _ in range(4):
            finished.clear()
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            with pytest.raises(KeyboardInterrupt):
                run_concurrently(Job(), [("a", [], [])])  # one thread: the one whose wait the signal cuts
            assert finished == ["a"]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_threads_sharing_an_engine_get_the_maps_of_one_at_a_time(data, dev_engine):
    """An archive's units in threads call one engine at once (no run's turns between them): each call's maps
    equal the same call alone. (Two passes at once clashed on torch.func's process-wide forward-AD levels:
    "Trying to access a forward AD level with an invalid index", or wrong maps.)"""
    from video_fixtures import davis_frames

    groups = [torch.stack([dev_engine.prepare(image) for image in davis_frames(video, 6)]) for video in VIDEOS[:2]]
    alone = [dev_engine.segment(x).maps for x in groups]
    results: dict[int, list[np.ndarray]] = {0: [], 1: []}

    def calls(i: int) -> None:
        for _ in range(10):
            results[i].append(dev_engine.segment(groups[i]).maps)

    threads = [threading.Thread(target=calls, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in (0, 1):
        assert len(results[i]) == 10
        for maps in results[i]:
            np.testing.assert_allclose(maps, alone[i], atol=1e-6)
