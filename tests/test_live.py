"""Live cameras: readers at the camera's pace, drop policies, latency, metrics, against a real RTSP server.

The camera is GStreamer's RTSP server (tests/rtsp_server.py, run by Debian's python3 in its own
process, stopped by its PID at the end of every test) looping a 25 fps H.264 clip of DAVIS
frames. The engine is the small development engine of test_pipeline (64 px); a test that needs
an engine slower than the camera makes its `segment` sleep.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from prefect_fixtures import free_port, wait_for
from prometheus_client.parser import text_string_to_metric_families
from rtsp_camera import make_clip, rtsp_camera
from test_pipeline import dev_checkpoint, dev_engine  # noqa: F401  (fixtures)

from streamcosal.io.frame import Frame, FrameSource, VideoInfo
from streamcosal.io.pipe import WRITER_NOTE_AFTER_S
from streamcosal.io.stream import ReconnectPolicy
from streamcosal.run.groups import default_groups
from streamcosal.run.live import LiveReader, live_windows
from streamcosal.run.metrics import LiveStats
from streamcosal.run.pipeline import run_pipeline
from streamcosal.run.records import PipelineConfig
from streamcosal.storage import ConsensusStore, read_events, read_results

# Live cameras over a real RTSP server, in real time: run by `pytest -m slow` (.ci/run runs both).
pytestmark = pytest.mark.slow

QUICK_RECONNECT = ReconnectPolicy(max_attempts=20, backoff_s=0.1, max_backoff_s=0.5)


@pytest.fixture(scope="module")
def clips(data, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {name: make_clip(folder / f"{name}.mp4", name) for name in ("blackswan", "goat")}


class PacedSource(FrameSource):
    """n frames at `fps`, in real time: a camera without a network."""

    def __init__(self, n: int, fps: float = 100.0):
        super().__init__()
        self.name, self.n, self.fps = "paced", n, fps
        self.info = VideoInfo(8, 8, fps, None, None, 0, "raw")

    def _generate(self):
        for i in range(self.n):
            time.sleep(1 / self.fps)
            yield Frame(np.zeros((8, 8, 3), np.uint8), i, i / self.fps, self.name)


def drain(reader: LiveReader, per_window: int, seconds_per_window: float) -> list[Frame]:
    """Take windows from one reader with an engine that needs `seconds_per_window` each."""
    taken = []
    for window in live_windows([reader], per_window):
        taken += window.emitted
        time.sleep(seconds_per_window)
    return taken


@pytest.mark.parametrize("policy", ["latest", "stride", "all"])
def test_drop_policies_with_an_engine_slower_than_the_camera(policy):
    """100 frames/s against an engine doing 4 frames per 0.1 s (40/s): latest and stride drop and count
    it, all keeps every frame; the frames keep their own indices and timestamps, in order."""
    reader = LiveReader(PacedSource(150), policy=policy, capacity=16)
    taken = drain(reader, 4, 0.1)
    c = reader.counters
    assert c.received == 150 and c.taken == len(taken) and c.received == c.taken + c.dropped
    indices = [f.index for f in taken]
    assert indices == sorted(indices) and all(f.timestamp == f.index / 100.0 for f in taken)
    if policy == "all":
        assert indices == list(range(150)) and c.dropped == 0
    else:
        assert c.dropped > 30
    if policy == "stride":
        assert reader.stride >= 2  # adapted to the engine's rate
        gaps = set(np.diff(indices[-8:]))
        assert gaps == {reader.stride}  # evenly spaced: every k-th frame


def test_windows_are_sized_for_the_latency_target():
    """A 25 fps camera and an engine needing 0.2 s per frame for 5 s, then 0.01 s: windows of 8 would
    take 1.6 s; with max_latency_s 1 they shrink to floor(1 / (0.2 + 0.04)) = 4 frames and every
    frame's wait and processing stay within 1 s (plus a margin for the machine), then they grow back
    to 8 when the engine is fast."""
    reader = LiveReader(PacedSource(250, fps=25.0))
    slow_until = time.monotonic() + 5.0
    sizes: list[tuple[bool, int]] = []
    latencies: list[tuple[bool, float]] = []
    for window in live_windows([reader], 8, max_latency_s=1.0):
        slow = time.monotonic() < slow_until
        time.sleep((0.2 if slow else 0.01) * len(window.frames))
        done = time.time()
        sizes.append((slow, len(window.frames)))
        latencies += [(slow, done - f.captured) for f in window.emitted]
    assert sizes[0] == (True, 1)  # nothing measured yet
    slow_sizes = [n for slow, n in sizes[1:] if slow]
    assert len(slow_sizes) >= 3 and max(slow_sizes) <= 4 and slow_sizes[-1] >= 3
    assert max(t for slow, t in latencies if slow) < 1.0 + 0.25
    fast_sizes = [n for slow, n in sizes if not slow]
    assert fast_sizes[-4:-1] == [8, 8, 8]  # grown back (the last may be the source's partial end)
    assert reader.counters.dropped > 0


def test_policy_all_keeps_the_configured_window():
    """`all` processes every frame anyway: its windows keep their size whatever the latency target."""
    reader = LiveReader(PacedSource(40, fps=200.0), policy="all")
    assert [len(w.frames) for w in live_windows([reader], 8, max_latency_s=0.01)] == [8] * 5
    assert reader.counters.dropped == 0


def test_frames_arrive_and_are_segmented_over_rtsp(clips, dev_engine, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="streamcosal.run.metrics")
    with rtsp_camera({"/cam": clips["blackswan"]}) as camera:
        report = run_pipeline([camera.url("/cam")], tmp_path / "out", dev_engine,
                              PipelineConfig(window=4, duration=3.0, log_every_s=0.5), group="door")
    run = report.sources[0]
    assert run.status == "done" and run.mode == "streaming" and run.frames >= 8
    rows = read_results(tmp_path / "out").to_pylist()
    assert len(rows) == run.frames and {r["group"] for r in rows} == {"door"}
    assert all((r["height"], r["width"]) == (96, 160) for r in rows)
    indices = [r["frame_index"] for r in rows]
    times = [r["timestamp"] for r in rows]
    assert indices == sorted(indices) and times == sorted(times)  # the camera's own, in order
    assert all(0 < r["latency_s"] < 30 for r in rows)
    assert run.live.received >= run.frames and run.live.latency_p95_s is not None
    saved = json.loads((tmp_path / "out" / "runs" / f"{report.run_id}.json").read_text())
    assert saved["sources"][0]["live"]["processed"] == run.frames
    assert f"live: {camera.url('/cam')}: " in caplog.text and "dropped (latest)" in caplog.text  # the status line
    assert ", window " in caplog.text


@pytest.mark.parametrize("policy", ["latest", "stride"])
def test_slow_engine_keeps_latency_bounded_and_counts_drops(clips, dev_engine, tmp_path, monkeypatch, policy):
    """An engine needing 0.5 s per window of 4 frames (8 frames/s) on a 25 fps camera: the newest
    frames (latest) or every k-th frame (stride) are taken, the others dropped and counted; latency
    stays about one window's time."""
    segment = dev_engine.segment

    def slow_segment(x, consensus=None, prototype_prior=None):
        time.sleep(0.5)
        return segment(x, consensus, prototype_prior)

    monkeypatch.setattr(dev_engine, "segment", slow_segment)
    with rtsp_camera({"/cam": clips["blackswan"]}) as camera:
        report = run_pipeline([camera.url("/cam")], tmp_path / "out", dev_engine,
                              PipelineConfig(window=4, duration=6.0, drop_policy=policy), group="door")
    live = report.sources[0].live
    assert live.policy == policy and live.dropped > live.processed > 0
    latencies = np.array(read_results(tmp_path / "out")["latency_s"].to_pylist())
    late = latencies[len(latencies) // 2 :]
    assert late.max() < 3.0  # bounded: with no drop it would grow by ~1.2 s every second (36/4.8)
    assert late.mean() <= latencies[: len(latencies) // 2].mean() + 0.5  # not growing


def test_slow_engine_over_rtsp_shrinks_the_window_within_the_latency_target(clips, dev_engine, tmp_path, monkeypatch):
    """The engine needs 0.2 s per frame for the first 5 s, then its own (fast) time: the windows
    (default max_latency 1 s, --window 8) shrink to fit, the latency of what is processed meanwhile
    stays within 1 s plus a margin, and the windows grow back to 8."""
    segment, slow_until, calls = dev_engine.segment, time.monotonic() + 5.0, []

    def slow_segment(x, consensus=None, prototype_prior=None):
        slow = time.monotonic() < slow_until
        calls.append((slow, x.shape[0]))
        time.sleep(0.2 * x.shape[0] if slow else 0.0)
        return segment(x, consensus, prototype_prior)

    monkeypatch.setattr(dev_engine, "segment", slow_segment)
    with rtsp_camera({"/cam": clips["blackswan"]}) as camera:
        report = run_pipeline([camera.url("/cam")], tmp_path / "out", dev_engine,
                              PipelineConfig(window=8, duration=9.0), group="door")
    table = read_results(tmp_path / "out").select(["window", "latency_s"]).to_pylist()
    slow_windows = {i for i, (slow, _) in enumerate(calls) if slow and i > 0}  # window i is the i-th call
    slow_sizes = [n for i, (_, n) in enumerate(calls) if i in slow_windows]
    assert slow_sizes and max(slow_sizes) <= 4  # floor(1 / (0.2 + 0.04)), less the engine's own time
    latencies = np.array([r["latency_s"] for r in table if r["window"] in slow_windows])
    assert latencies.max() < 1.0 + 0.5
    assert [n for _, n in calls[-3:]] == [8, 8, 8]  # grown back
    assert report.sources[0].live.dropped > 0


def test_a_camera_through_the_video_job_takes_the_live_settings(clips, dev_checkpoint, tmp_path):  # noqa: F811
    """What the cosal-video flow runs (`jobs.run_video`), with the live settings in its RunParams."""
    from streamcosal.params import EngineSpec, RunParams
    from streamcosal.run.jobs import run_video

    params = RunParams(window=4, drop_policy="stride", max_latency=0.5, duration=3.0)
    with rtsp_camera({"/cam": clips["blackswan"]}) as camera:
        start = time.monotonic()
        report = run_video(camera.url("/cam"), tmp_path / "out", engine=EngineSpec(weights=dev_checkpoint, device="cpu"),
                           params=params, group="door")
        took = time.monotonic() - start
    run = report.sources[0]
    assert run.status == "done" and run.frames > 0 and run.live.policy == "stride" and took < 30


def test_camera_killed_and_restarted_midstream(clips, dev_engine, tmp_path, monkeypatch):
    """The RTSP server dies mid-stream and comes back: the run reconnects and goes on."""
    segmented, restarted = [], []  # wall times: windows segmented, the camera back
    segment = dev_engine.segment

    def timed_segment(*args, **kwargs):
        segmented.append(time.monotonic())
        return segment(*args, **kwargs)

    monkeypatch.setattr(dev_engine, "segment", timed_segment)
    with rtsp_camera({"/cam": clips["blackswan"]}) as camera:
        def outage() -> None:
            time.sleep(2.5)
            camera.stop()
            time.sleep(1.0)
            camera.start()
            restarted.append(time.monotonic())

        chaos = threading.Thread(target=outage, daemon=True)
        chaos.start()
        config = PipelineConfig(window=4, duration=9.0, reconnect=QUICK_RECONNECT)
        report = run_pipeline([camera.url("/cam")], tmp_path / "out", dev_engine, config, group="door")
        chaos.join(timeout=30)
    run = report.sources[0]
    assert run.status == "done" and run.live.reconnects >= 1, run
    times = np.array(read_results(tmp_path / "out")["timestamp"].to_pylist())
    assert np.all(np.diff(np.sort(times)) > 0)  # one timeline across the reconnect
    assert restarted and segmented[0] < restarted[0]  # results before the outage ...
    after = [t for t in segmented if t > restarted[0] + 0.5]  # ... and from the camera that came back
    assert len(after) >= 2, (segmented, restarted)


def test_two_cameras_in_one_group_and_one_stalls(clips, dev_engine, tmp_path):
    """Two cameras, one group: windows hold the newest frames of both; while one camera is frozen
    (its server stopped with SIGSTOP until the run ends) the other goes on alone, and the frozen one is
    named. The freeze outlasts the group's wait for a camera (up to twice its 2 s stall wait, plus an
    engine call) on any machine: a 3 s freeze raced it on a slower one."""
    with rtsp_camera({"/a": clips["blackswan"]}) as a, rtsp_camera({"/b": clips["goat"]}) as b:
        frozen = threading.Timer(2.5, b.process.send_signal, (signal.SIGSTOP,))
        frozen.start()
        config = PipelineConfig(window=4, duration=9.0, stall_warning_s=1.0)
        try:
            report = run_pipeline([a.url("/a"), b.url("/b")], tmp_path / "out", dev_engine, config, group="lobby")
        finally:
            frozen.cancel()
            b.process.send_signal(signal.SIGCONT)
        assert frozen.finished.is_set()
    run_a, run_b = report.sources
    assert run_a.frames > 0 and run_b.frames > 0 and run_a.live.received > 0 and run_b.live.received > 0
    assert any("no frame for 1 s" in w for w in run_b.warnings) and not run_a.warnings
    table = read_results(tmp_path / "out")
    assert set(table["group"].to_pylist()) == {"lobby"}
    windows: dict[int, set[str]] = {}
    for row in table.select(["window", "source"]).to_pylist():
        windows.setdefault(row["window"], set()).add(row["source"])
    assert any(s == {a.url("/a"), b.url("/b")} for s in windows.values())  # both cameras in a window
    assert any(s == {a.url("/a")} for s in windows.values())  # a went on while b was frozen
    b_times = table.filter(pc.equal(table["source"], b.url("/b")))["latency_s"].to_pylist()
    assert len(b_times) == run_b.frames


def closing_times(monkeypatch) -> dict[str, float]:
    """source -> time.monotonic() at which the run closed its member (its results complete), filled while a
    run runs."""
    from streamcosal.run.sink import ResultSink

    closed: dict[str, float] = {}
    close_member = ResultSink.close_member

    def timed(self, member):
        closed[member.run.source] = time.monotonic()
        return close_member(self, member)

    monkeypatch.setattr(ResultSink, "close_member", timed)
    return closed


def test_two_cameras_in_their_own_groups_run_at_the_same_time(clips, dev_engine, tmp_path, monkeypatch, caplog):
    """`streamcosal video rtsp://cam1 rtsp://cam2 --mode streaming`: each camera its own group (the default),
    both read and segmented at once, sharing the engine by turns, each with its own consensus and live
    summary; --duration stops both (was: the first camera's group ran alone, the second stayed "pending,
    0 frames" until the first ended, which a camera never does)."""
    caplog.set_level(logging.INFO, logger="streamcosal.run.metrics")
    closed, out, duration = closing_times(monkeypatch), tmp_path / "out", 8.0
    with rtsp_camera({"/a": clips["blackswan"], "/b": clips["goat"]}) as camera:
        urls = [camera.url("/a"), camera.url("/b")]
        start = time.monotonic()
        report = run_pipeline(urls, out, dev_engine,
                              PipelineConfig(mode="streaming", window=4, duration=duration, log_every_s=1.0))
        took = time.monotonic() - start
    assert [(r.source, r.group) for r in report.sources] == [(u, u) for u in urls]  # a group each
    for run in report.sources:
        assert run.status == "done" and run.mode == "streaming" and run.frames > 0, run
        assert run.live is not None and run.live.processed == run.frames and run.live.received >= run.frames
        assert run.live.latency_p95_s is not None
    frames = [r.frames for r in report.sources]
    assert min(frames) > 0.5 * max(frames), frames  # neither camera is starved of the engine
    assert took < 2 * duration, took  # at once, not one camera after the other
    assert abs(closed[urls[0]] - closed[urls[1]]) < 3.0, closed  # both stopped by --duration
    assert set(report.consensus) == set(urls) and all(report.consensus.values())
    assert set(ConsensusStore.open(out / "consensus.npz").groups()) == set(urls)
    rows = read_results(out).select(["source", "group", "latency_s"]).to_pylist()
    for url, run in zip(urls, report.sources):
        mine = [r for r in rows if r["source"] == url]
        assert len(mine) == run.frames and {r["group"] for r in mine} == {url}
        assert all(r["latency_s"] is not None for r in mine)
    saved = json.loads((out / "runs" / f"{report.run_id}.json").read_text())
    assert [s["live"]["processed"] for s in saved["sources"]] == frames and saved["frames"] == sum(frames)
    assert set(saved["consensus"]) == set(urls)
    status = [line for line in caplog.messages if line.startswith("live: ")]
    assert any(f"{urls[0]}: " in line and f"{urls[1]}: " in line for line in status), status  # both cameras


def test_a_video_file_beside_a_camera_is_not_starved(clips, recording, dev_engine, tmp_path, monkeypatch):
    """A camera and a video file, each its own group: the file is segmented (globally, every frame) while
    the camera runs, instead of after a camera that never ends."""
    closed, out, duration = closing_times(monkeypatch), tmp_path / "out", 8.0
    clip = recording[0]
    with rtsp_camera({"/cam": clips["blackswan"]}) as camera:
        url = camera.url("/cam")
        start = time.monotonic()
        report = run_pipeline([url, clip], out, dev_engine, PipelineConfig(window=4, duration=duration))
    cam, file = report.sources
    assert file.status == "done" and file.mode == "global" and file.frames == 75 and file.live is None, file
    assert cam.status == "done" and cam.mode == "streaming" and cam.frames > 0 and cam.live.processed == cam.frames
    assert closed[str(clip)] < closed[url] - 1.0, (closed, start)  # done while the camera still ran
    rows = read_results(out).select(["source", "frame_index", "latency_s"]).to_pylist()
    indices = sorted(r["frame_index"] for r in rows if r["source"] == str(clip))
    assert indices == list(range(75)) and all(r["latency_s"] is None for r in rows if r["source"] == str(clip))
    assert set(report.consensus) == {url, clip.stem}


@pytest.mark.parametrize(("sig", "code", "name"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")])
def test_a_stop_signal_stops_every_camera_group(clips, dev_checkpoint, tmp_path, sig, code, name):  # noqa: F811
    """Two cameras in their own groups (each in its own thread) and SIGTERM or Ctrl-C, which only the main
    thread receives: every group stops, writes what it has, and the run ends as a one-camera run does."""
    out = tmp_path / "out"
    with rtsp_camera({"/a": clips["blackswan"], "/b": clips["goat"]}) as camera:
        urls = [camera.url("/a"), camera.url("/b")]
        cmd = [sys.executable, "-c", "from streamcosal.cli import app; app()", "video", *urls,
               "--out", str(out), "--weights", str(dev_checkpoint), "--window", "4", "--overlay"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for("both cameras' first results", lambda: len(list(out.glob("overlays/*/.*.tmp.mp4"))) == 2, 60,
                     interval_s=0.05, alive=proc)
            time.sleep(1.0)
            proc.send_signal(sig)
            _, stderr = proc.communicate(timeout=10)  # as a one-camera run: well within a 30 s grace period
        finally:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == code, stderr
    rows = read_results(out).select(["source"]).to_pylist()
    report = json.loads(next(out.glob("runs/*.json")).read_text())
    assert report["interrupted"] == name and report["frames"] == len(rows)
    for url, run in zip(urls, report["sources"]):
        processed = sum(1 for r in rows if r["source"] == url)
        assert run["status"] == "interrupted" and run["frames"] == processed > 0 and run["live"]["processed"] == processed
        assert run["overlay"]
    assert not list(out.rglob(".*"))  # no temporary file left


def test_the_engine_is_shared_by_turns():
    """The engine's lock while groups run at once: a group that asks again at once waits behind one already
    waiting (a plain lock lets it take the engine again and again), so equal windows take strict turns;
    a group whose windows have a quarter of the frames gets four turns for the other's one (the same frames)."""
    from streamcosal.run.concurrent import FairLock

    def share(costs: dict[str, int], turns: int) -> list[str]:
        lock, order = FairLock(), []

        def group(name: str) -> None:
            for _ in range(turns // costs[name]):
                with lock.turn(costs[name]):
                    order.append(name)
                    time.sleep(0.002 * costs[name])

        threads = [threading.Thread(target=group, args=(name,)) for name in costs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        return order

    def together(order: list[str]) -> list[str]:
        """From the later group's first turn to the last turn before one of them was left alone."""
        first = min(order.index(name) for name in set(order) if name != order[0])
        last = len(order) - 1
        while order[last - 1] == order[-1]:
            last -= 1
        return order[first - 1:last]

    equal = share({"a": 1, "b": 1}, 40)
    both = together(equal)
    assert len(equal) == 80 and len(both) > 40, equal
    assert all(x != y for x, y in itertools.pairwise(both)), equal  # strictly by turns
    weighted = together(share({"a": 4, "b": 1}, 80))
    assert weighted.count("b") > 3 * weighted.count("a") > 0, weighted
    assert max(len(run) for run in "".join(weighted).split("a")) <= 5, weighted  # b: about 4 turns per a turn


def scraper(port: int, scraped: list[str]) -> threading.Thread:
    """A started thread that scrapes http://127.0.0.1:port/metrics until the text has a latency
    (appended to `scraped`), for at most 20 s."""

    def scrape() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    text = response.read().decode()
            except OSError:
                time.sleep(0.2)
                continue
            if 'quantile="0.95"' in text:
                scraped.append(text)
                return
            time.sleep(0.2)

    thread = threading.Thread(target=scrape, daemon=True)
    thread.start()
    return thread


def test_metrics_endpoint_scraped_while_running(clips, dev_engine, tmp_path):
    port = free_port()
    scraped: list[str] = []
    with rtsp_camera({"/cam": clips["blackswan"]}) as camera:
        scraping = scraper(port, scraped)
        config = PipelineConfig(window=4, duration=5.0, metrics_port=port)
        report = run_pipeline([camera.url("/cam")], tmp_path / "out", dev_engine, config, group="door")
        scraping.join(timeout=30)
    assert scraped, "no metrics with a latency were served during the run"
    samples = {(s.name, s.labels.get("quantile")): s for f in text_string_to_metric_families(scraped[0]) for s in f.samples}
    key = {"source": camera.url("/cam"), "group": "door"}
    for name in ("streamcosal_frames_received_total", "streamcosal_frames_processed_total",
                 "streamcosal_frames_dropped_total", "streamcosal_reconnects_total", "streamcosal_buffer_frames",
                 "streamcosal_window_frames", "streamcosal_processing_fps", "streamcosal_last_frame_timestamp_seconds"):
        assert samples[(name, None)].labels == key
    assert samples[("streamcosal_frames_processed_total", None)].value > 0
    assert 1 <= samples[("streamcosal_window_frames", None)].value <= 4
    assert 0 < samples[("streamcosal_latency_seconds", "0.5")].value <= samples[("streamcosal_latency_seconds", "0.95")].value
    with pytest.raises(OSError):  # the server is gone with the run
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    assert report.sources[0].status == "done"


def test_a_long_run_keeps_its_latencies_in_bounded_memory():
    """The run's p50/p95/max come from a fixed histogram, not from every latency kept (a week at 10
    results/s would be 6 M of them): memory does not grow with the results, and the quantiles are
    within 1% of the exact ones."""
    stats = LiveStats(None, None)  # type: ignore[arg-type]  # recording needs neither reader nor run
    values = np.random.default_rng(0).lognormal(-1.0, 0.8, 100_000)
    tracemalloc.start()
    try:
        for v in values[:1000]:
            stats.record(float(v))
        before = tracemalloc.get_traced_memory()[0]
        for v in values[1000:]:
            stats.record(float(v))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 20_000  # bytes; keeping every latency as a float32 grows by 396 KB here
    p50, p95, top = stats.quantiles(recent=False)
    assert p50 == pytest.approx(np.percentile(values, 50), rel=0.01)
    assert p95 == pytest.approx(np.percentile(values, 95), rel=0.01) and top == values.max()


def test_metrics_port_in_use_is_refused_before_any_work(dev_engine, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"metrics port {port} on 127.0.0.1 cannot be used.*--metrics-port"):
            run_pipeline(["rtsp://127.0.0.1:9/none"], tmp_path / "out", dev_engine, PipelineConfig(metrics_port=port))
    with pytest.raises(OSError, match="metrics port 9108 on 256.0.0.1 cannot be used"):  # the host is passed on
        run_pipeline(["rtsp://127.0.0.1:9/none"], tmp_path / "out", dev_engine,
                     PipelineConfig(metrics_port=9108, metrics_host="256.0.0.1"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("camera_down", [False, True], ids=["streaming", "reconnecting"])
def test_sigterm_during_a_live_run_leaves_readable_results(clips, dev_checkpoint, tmp_path, camera_down):  # noqa: F811
    """SIGTERM while frames flow, or while the camera is gone and the reader is reconnecting (backing
    off between tries): the run stops within a grace period, with every result so far readable."""
    out = tmp_path / "out"
    with rtsp_camera({"/cam": clips["blackswan"]}) as camera:
        cmd = [sys.executable, "-c", "from streamcosal.cli import app; app()", "video", camera.url("/cam"),
               "--out", str(out), "--weights", str(dev_checkpoint), "--window", "4", "--overlay", "--group", "door"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for("the first results", lambda: bool(list(out.glob("overlays/*/.*.tmp.mp4"))), 60,
                     interval_s=0.05, alive=proc)
            time.sleep(1.0)
            if camera_down:
                camera.stop()
                time.sleep(2.0)
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=10)  # well within a 30 s grace period
        finally:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 143, stderr
    rows = read_results(out).to_pylist()
    assert rows and all(r["latency_s"] is not None for r in rows)
    report = json.loads(next(out.glob("runs/*.json")).read_text())
    assert report["interrupted"] == "SIGTERM" and report["frames"] == len(rows)
    assert report["sources"][0]["live"]["processed"] == len(rows)
    assert not list(out.rglob(".*"))  # no temporary file left


def test_rtsp_url_that_refuses(dev_engine, tmp_path):
    url = f"rtsp://127.0.0.1:{free_port()}/cam"
    config = PipelineConfig(reconnect=ReconnectPolicy(max_attempts=2, backoff_s=0.05, max_backoff_s=0.1))
    report = run_pipeline([url], tmp_path / "out", dev_engine, config)
    run = report.sources[0]
    assert run.status == "failed" and "unreachable after 3 tries" in run.error and report.exit_code == 1


def test_camera_that_wants_a_login(clips, dev_engine, tmp_path, caplog):
    """401: one clear message (the password not shown), no retries; with the login it works."""
    with rtsp_camera({"/cam": clips["blackswan"]}, auth="viewer:s3cret") as camera:
        wrong = camera.url("/cam", "viewer:wrong")
        report = run_pipeline([camera.url("/cam"), wrong], tmp_path / "out", dev_engine, PipelineConfig(window=4))
        for run in report.sources:
            assert run.status == "failed" and "refused the login" in run.error and "rtsp://USER:PASSWORD@" in run.error
        assert "wrong" not in report.sources[1].error
        assert "connection try" not in caplog.text  # not retried
        good = run_pipeline([camera.url("/cam", "viewer:s3cret")], tmp_path / "out", dev_engine,
                            PipelineConfig(window=4, duration=2.0))
    assert good.sources[0].status == "done" and good.sources[0].frames > 0


def test_a_password_in_the_url_is_stored_nowhere(clips, dev_engine, tmp_path, caplog):
    """A camera URL with user:password: the run connects with it, but the rows, events, report,
    store, file names, metrics and log say rtsp://viewer:***@...; a changed password is the same
    camera (its group and source identity in the store)."""
    caplog.set_level(logging.INFO)
    port, scraped, out = free_port(), [], tmp_path / "out"
    with rtsp_camera({"/cam": clips["blackswan"]}, auth="viewer:s3cret") as camera:
        scraping = scraper(port, scraped)
        config = PipelineConfig(window=4, duration=4.0, metrics_port=port, overlay=True,
                                event_min_duration=0.0, event_threshold=0.0)
        report = run_pipeline([camera.url("/cam", "viewer:s3cret")], out, dev_engine, config)
        scraping.join(timeout=30)
        shown = camera.url("/cam", "viewer:***")
    assert report.sources[0].status == "done" and report.frames > 0 and scraped
    rows = read_results(out).to_pylist()
    assert {(r["source"], r["group"]) for r in rows} == {(shown, shown)}
    events = read_events(out).to_pylist()
    assert events and {e["source"] for e in events} == {shown}
    store = ConsensusStore.open(out / "consensus.npz")
    assert store.groups() == [shown] and store.source(shown) == shown
    texts = [repr(rows), repr(events), scraped[0], caplog.text,
             *(f.read_text() for f in out.rglob("*.json")), *(str(f) for f in out.rglob("*"))]
    assert not [t for t in texts if "s3cret" in t]
    assert shown in scraped[0] and shown in (out / "runs" / f"{report.run_id}.json").read_text()
    assert default_groups([camera.url("/cam", "viewer:changed")], store) == [(shown, [camera.url("/cam", "viewer:changed")])]


def test_resolution_change_midway(data, dev_engine, tmp_path):
    """A live stream that switches from 160x96 to 320x192: every frame is segmented at its own size,
    and the change is named."""
    from fractions import Fraction

    from stream_server import serve_stream
    from video_fixtures import davis_frames, encode_video

    small, large = davis_frames("goat", 10, (160, 96)), davis_frames("goat", 20, (320, 192))[10:]
    tb = Fraction(1, 90000)
    encode_video(small, tmp_path / "a.ts", fps=10, container_format="mpegts", time_base=tb,
                 pts=[i * 9000 for i in range(10)])
    encode_video(large, tmp_path / "b.ts", fps=10, container_format="mpegts", time_base=tb,
                 pts=[(10 + i) * 9000 for i in range(10)])
    data_ts = (tmp_path / "a.ts").read_bytes() + (tmp_path / "b.ts").read_bytes()
    config = PipelineConfig(window=4, drop_policy="all",
                            reconnect=ReconnectPolicy(max_attempts=1, backoff_s=0.05, max_backoff_s=0.1))
    with serve_stream(data_ts, plays=1) as server:
        report = run_pipeline([server.url], tmp_path / "out", dev_engine, config, group="cam")
    run = report.sources[0]
    assert any("resolution changed from 160x96 to 320x192" in w for w in run.warnings), run.warnings
    rows = read_results(tmp_path / "out").to_pylist()
    sizes = {(r["width"], r["height"]) for r in rows}
    assert sizes == {(160, 96), (320, 192)} and run.live.dropped == 0


# ----------------------------------------------------------------------------- --live: files and pipes


@pytest.fixture(scope="module")
def recording(data, tmp_path_factory) -> tuple[Path, Path]:
    """75 DAVIS frames (3 s at 25 fps) as an MP4 and as an MPEG-TS (what an ffmpeg writes to a pipe)."""
    from video_fixtures import davis_frames, encode_video

    folder = tmp_path_factory.mktemp("recording")
    frames = davis_frames("goat", 75)
    encode_video(frames, folder / "goat.mp4", fps=25)
    encode_video(frames, folder / "goat.ts", fps=25, container_format="mpegts")
    return folder / "goat.mp4", folder / "goat.ts"


def slow_engine(engine, monkeypatch, seconds_per_window: float) -> None:
    segment = engine.segment

    def slow_segment(x, consensus=None, prototype_prior=None):
        time.sleep(seconds_per_window)
        return segment(x, consensus, prototype_prior)

    monkeypatch.setattr(engine, "segment", slow_segment)


def test_a_file_read_live_is_released_by_its_timestamps(recording):
    """A recording read live behaves like a camera replaying it: each frame enters the buffer when the
    wall time since the first frame reaches its timestamp."""
    from streamcosal.io.open import open_source

    reader = LiveReader(open_source(recording[0]), policy="all", paced=True)
    try:
        frames = [f for window in live_windows([reader], 8) for f in window.emitted]
    finally:
        reader.close()
    assert [f.index for f in frames] == list(range(75))
    late = [(f.captured - frames[0].captured) - f.timestamp for f in frames]
    assert min(late) > -0.01 and max(late) < 0.25  # never early; late only by the machine's load
    assert frames[-1].timestamp == pytest.approx(2.96, abs=0.001)


@pytest.mark.parametrize("policy", ["latest", "all"])
def test_a_file_read_live_with_a_slow_engine(recording, dev_engine, tmp_path, monkeypatch, policy):
    """--live on a DAVIS clip and an engine slower than its 25 fps (0.25 s per window of 4: 16 frames/s):
    latest drops frames and keeps latency bounded, all processes every frame; every result keeps the
    file's own frame index and timestamp."""
    from streamcosal.io.open import open_source

    with open_source(recording[0]) as source:
        own = {f.index: f.timestamp for f in source}
    slow_engine(dev_engine, monkeypatch, 0.25)
    start = time.monotonic()
    report = run_pipeline([recording[0]], tmp_path / "out", dev_engine,
                          PipelineConfig(live=True, window=4, drop_policy=policy), group="replay")
    took = time.monotonic() - start
    run = report.sources[0]
    assert run.status == "done" and run.mode == "streaming" and run.live.policy == policy
    assert run.live.received == 75 and run.live.received == run.frames + run.live.dropped
    rows = read_results(tmp_path / "out").to_pylist()
    assert len(rows) == run.frames and all(own[r["frame_index"]] == pytest.approx(r["timestamp"], abs=1e-6) for r in rows)
    indices = [r["frame_index"] for r in rows]
    assert indices == sorted(indices)
    latencies = np.array([r["latency_s"] for r in rows])
    if policy == "all":
        assert indices == list(range(75)) and run.live.dropped == 0
        assert latencies[-1] > latencies[0] + 0.5  # every frame, so the latency grows: 25 fps in, 16 out
    else:
        assert run.live.dropped > 0 and took < 3.0 + 3.0  # the recording's time, plus the last windows
        assert latencies.max() < 1.0 + 0.5 and latencies.mean() < 1.0
    assert took > 2.9  # paced: a 3-s recording takes 3 s


@contextlib.contextmanager
def fifo_writer(fifo: Path, data: bytes, seconds: float) -> Iterator[threading.Thread]:
    """A thread that writes `data` into the named pipe `fifo` in 30 pieces spread over `seconds` (like
    `ffmpeg -re ... -f mpegts FIFO`), once a reader has opened it; stopped and joined on exit."""
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():  # a FIFO opens for writing only once it has a reader
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:
                time.sleep(0.02)
        else:
            return
        os.set_blocking(fd, True)
        try:
            for piece in np.array_split(np.frombuffer(data, np.uint8), 30):
                if stop.wait(seconds / 30):
                    return
                os.write(fd, piece.tobytes())
        except BrokenPipeError:  # the reader went away
            pass
        finally:
            os.close(fd)

    thread = threading.Thread(target=write, name="fifo writer", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive(), "the FIFO writer did not stop"


@pytest.mark.parametrize("live", [True, False], ids=["live", "not live"])
def test_a_fifo_fed_by_a_writer(recording, dev_engine, tmp_path, live):
    """A named pipe an MPEG-TS is written into over 3 s: with --live it is read by a live reader at the
    writer's pace (results, counts, latency); without, every frame is processed at the engine's pace
    (the writer waits on a full pipe), in streaming mode (a pipe has no length)."""
    fifo = tmp_path / "camera.ts"
    os.mkfifo(fifo)
    with fifo_writer(fifo, recording[1].read_bytes(), 3.0):
        report = run_pipeline([fifo], tmp_path / "out", dev_engine, PipelineConfig(live=live, window=4), group="pipe")
    run = report.sources[0]
    assert run.status == "done" and run.mode == "streaming" and run.frames > 0, run
    rows = read_results(tmp_path / "out").to_pylist()
    indices = [r["frame_index"] for r in rows]
    assert indices == sorted(indices)
    assert all(r["timestamp"] == pytest.approx(r["frame_index"] / 25, abs=1e-3) for r in rows)  # the stream's own
    if live:
        assert run.live.received == 75 and run.live.received == run.frames + run.live.dropped
        assert all(0 < r["latency_s"] < 5 for r in rows)
    else:
        assert run.live is None and indices == list(range(75)) and all(r["latency_s"] is None for r in rows)


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_the_live_flag_of_the_cli(recording, dev_checkpoint, tmp_path, source):  # noqa: F811
    """`streamcosal video CLIP --live` and `... | streamcosal video /dev/stdin --live`: results with their
    latency and the live summary in the run report."""
    out = tmp_path / "out"
    spec, feed = (str(recording[0]), None) if source == "file" else ("/dev/stdin", recording[1].read_bytes())
    cmd = [sys.executable, "-c", "from streamcosal.cli import app; app()", "video", spec, "--live",
           "--out", str(out), "--weights", str(dev_checkpoint), "--window", "4", "--group", "replay"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = proc.communicate(feed, timeout=120)
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == 0, stderr.decode()
    assert b"done" in stdout
    rows = read_results(out).to_pylist()
    assert rows and all(r["latency_s"] is not None for r in rows)
    report = json.loads(next(out.glob("runs/*.json")).read_text())
    live = report["sources"][0]["live"]
    assert report["sources"][0]["mode"] == "streaming" and live["received"] == 75 and live["processed"] == len(rows)


def test_images_are_not_read_live(data, dev_engine, tmp_path):
    """An image folder has no time to release its frames by: --live refuses it, naming it."""
    folder = data / "davis2016" / "images" / "blackswan"
    report = run_pipeline([folder], tmp_path / "out", dev_engine, PipelineConfig(live=True))
    run = report.sources[0]
    assert run.status == "failed" and f"{folder}: images have no timestamps to be read live by" in run.error


def test_stdin_is_the_same_source_from_run_to_run():
    """`/dev/stdin` resolves to this process's pipe (/proc/PID/fd/pipe:[N]), another every run: a pipe is
    known by its path as given, so a second `... | streamcosal video /dev/stdin` run continues the
    group `stdin` and its consensus instead of starting a group of its own."""
    code = "from streamcosal.run.consensus import source_identity_of; print(source_identity_of('/dev/stdin'))"
    seen = {subprocess.run([sys.executable, "-c", code], stdin=subprocess.PIPE, capture_output=True, text=True,
                           timeout=60, check=True).stdout.strip() for _ in range(2)}
    assert seen == {"/dev/stdin"}


def test_sigterm_while_waiting_for_a_fifos_writer(dev_checkpoint, tmp_path):  # noqa: F811
    """A FIFO nobody writes to yet: the run says it waits for its writer, and SIGTERM stops that wait like
    any other (exit 143, "stopped by SIGTERM"; was exit 1 and "cannot open as a video (Interrupted system call)")."""
    fifo, out = tmp_path / "camera.ts", tmp_path / "out"
    os.mkfifo(fifo)
    cmd = [sys.executable, "-c", "from streamcosal.cli import app; app()", "video", str(fifo), "--live",
           "--out", str(out), "--weights", str(dev_checkpoint)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        waiting = Path(f"/proc/{proc.pid}/wchan")  # where the main thread sleeps in the kernel
        wait_for("the run to wait for the writer", lambda: waiting.read_text() == "wait_for_partner", 60,
                 interval_s=0.1, alive=proc)
        time.sleep(WRITER_NOTE_AFTER_S + 0.5)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == 143 and "stopped by SIGTERM" in stderr, stderr
    assert f"{fifo}: waiting for a program to open the pipe for writing" in stderr, stderr
