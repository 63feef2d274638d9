"""Results as they happen, for library users: callbacks, observers and the iterator over a run's frame
and event records, on real videos through the real pipeline (tests/event_fixtures.py)."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
from event_fixtures import SIZE, config, dev_checkpoint, engine, events_video, video  # noqa: F401  (fixtures)

from streamcosal.run.event_tracker import EventTracker
from streamcosal.run.iterate import iter_results
from streamcosal.run.observers import EventRecord, FrameRecord, Observer, StopRun
from streamcosal.run.pipeline import run_pipeline
from streamcosal.storage import decode_mask, detect_events, read_events, read_results
from streamcosal.storage.parquet_files import source_key

EXPECTED_EVENTS = [(0, 5), (12, 17)]  # events_video's default


def spans(events: list) -> list[tuple[int, int]]:
    """(start frame, end frame) of stored events (rows) or event records, sorted."""
    return sorted((e["start_frame"], e["end_frame"]) if isinstance(e, dict)
                  else (e.event.start_frame, e.event.end_frame) for e in events)


@pytest.mark.parametrize("seed", range(6))
def test_the_tracker_finds_the_events_detect_events_finds(seed: int) -> None:
    """Frame by frame, the same events as the stored ones (a constant frame spacing: the interval is known)."""
    rng = np.random.default_rng(seed)
    n, spacing = 400, [0.04, 0.1, 0.5, 1.0, 0.2, 0.04][seed]
    t = np.arange(n) * spacing
    area = np.where(rng.random(n) < [0.3, 0.5, 0.7][seed % 3], rng.uniform(0.02, 0.6, n), rng.uniform(0, 0.019, n))
    area[rng.integers(0, n, 20)] = 0.0
    threshold, min_duration, max_gap = 0.02, [0.5, 0.0, 1.0][seed % 3], [0.5, 0.2, 1.5][seed % 3]
    image, mask = np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), bool)
    tracker = EventTracker("run", "s", "g", threshold, min_duration, max_gap)
    found = [tracker.add(i, t[i], area[i], image, mask) for i in range(n)] + [tracker.finish()]
    found = [e.event for e in found if e is not None]
    expected = detect_events(t, np.arange(n), area, threshold, min_duration, max_gap)
    assert len(found) == len(expected) > 0
    for got, want in zip(found, expected):
        assert (got.start_frame, got.end_frame, got.n_frames) == (want.start_frame, want.end_frame, want.n_frames)
        assert got.peak_area_fraction == want.peak_area_fraction
        assert got.mean_area_fraction == pytest.approx(want.mean_area_fraction, rel=1e-9)
        assert got.duration == pytest.approx(want.duration)


def test_callbacks_get_every_frame_once_written_and_every_event_when_its_file_is_done(engine, video, tmp_path):
    calls: list[FrameRecord | EventRecord] = []
    out = tmp_path / "out"
    report = run_pipeline([video], out, engine, config(), on_frame=calls.append, on_event=calls.append)
    assert report.exit_code == 0 and report.callback_errors == []
    frames = [c for c in calls if isinstance(c, FrameRecord)]
    events = [c for c in calls if isinstance(c, EventRecord)]
    rows = {r["frame_index"]: r for r in read_results(out).to_pylist()}
    assert [f.frame_index for f in frames] == sorted(rows) == list(range(18))
    for f in frames:
        row = rows[f.frame_index]
        assert (f.source, f.group, f.run_id, f.window) == (row["source"], row["group"], report.run_id, row["window"])
        assert f.timestamp == row["timestamp"] and f.area_fraction == pytest.approx(row["area_fraction"])
        assert f.similarity == pytest.approx(row["similarity"]) and f.latency_s is None
        assert f.mask.dtype == bool and f.mask.shape == (SIZE[1], SIZE[0]) and np.array_equal(f.mask, decode_mask(row))
        assert f.image.shape == (SIZE[1], SIZE[0], 3) and (list(f.bbox) if f.bbox else None) == row["bbox"]
    # a file's events come once it is done, after its frames; they are the stored events
    assert calls[-2:] == events and spans(events) == spans(read_events(out).to_pylist()) == EXPECTED_EVENTS
    for e in events:
        assert e.peak_mask.shape == (SIZE[1], SIZE[0]) and e.peak_mask[:, SIZE[0] // 2 + 2:].all()
        assert e.peak_image.shape == (SIZE[1], SIZE[0], 3) and e.clip == ()
        assert e.event.start_frame <= e.peak_frame_index <= e.event.end_frame
        assert e.id == f"{report.run_id}:{source_key(str(video))}:{e.event.start_frame}"


def test_a_live_sources_events_come_while_it_runs(engine, tmp_path):
    """Read live (a camera replaying the file), an event is handed over once final: the first before the
    source's last frames are even read."""
    video = events_video(tmp_path / "goat.mp4", "BBBBBBddddddBBBBBBdddddddd")
    calls: list[FrameRecord | EventRecord] = []
    out = tmp_path / "out"
    report = run_pipeline([video], out, engine, config(live=True, drop_policy="all"), on_frame=calls.append,
                          on_event=calls.append)
    assert report.exit_code == 0 and report.frames == 26
    order = [("event", c.event.start_frame) if isinstance(c, EventRecord) else ("frame", c.frame_index) for c in calls]
    first, second = order.index(("event", 0)), order.index(("event", 12))
    # final at the first frame more than 0.5 s after the last present one's follower (frame 6, 0.6 s): frame 12
    assert max(i for kind, i in order[:first] if kind == "frame") < 16  # frame 12's window, not the last frames
    assert max(i for kind, i in order[:second] if kind == "frame") < 25
    assert spans([c for c in calls if isinstance(c, EventRecord)]) == spans(read_events(out).to_pylist())


class Failing(Observer):
    """Raises on its frame ``fail_at``; counts what it was given."""

    def __init__(self, fail_at: int) -> None:
        self.fail_at, self.frames, self.events = fail_at, [], []

    def on_frame(self, frame: FrameRecord) -> None:
        self.frames.append(frame.frame_index)
        if frame.frame_index == self.fail_at:
            raise ValueError("the user's database is down")

    def on_event(self, event: EventRecord) -> None:
        self.events.append(event)


def test_a_callback_that_raises_is_named_and_dropped_and_the_run_keeps_everything(engine, video, tmp_path, caplog):
    failing, others = Failing(fail_at=5), []

    def count_events(event: EventRecord) -> None:
        others.append(event)

    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        report = run_pipeline([video], out, engine, config(), observers=[failing], on_event=count_events)
    assert read_results(out).num_rows == 18 == report.frames and report.sources[0].status == "done"
    assert failing.frames == [0, 1, 2, 3, 4, 5]  # not called again after it raised
    assert len(failing.events) == len(others) == 2  # its other method and the other callbacks go on
    [error] = report.callback_errors
    assert "callback Failing.on_frame raised ValueError: the user's database is down" in error
    assert f"source {video}, group 'goat', frame 5 (0.500 s)" in error and "not called again" in error
    assert error in caplog.text and "Traceback" in caplog.text
    assert report.exit_code == 1
    saved = json.loads((out / "runs" / f"{report.run_id}.json").read_text())
    assert saved["callback_errors"] == [error] and saved["exit_code"] == 1


def test_stop_run_from_a_callback_stops_the_run_and_keeps_what_was_done(engine, video, tmp_path):
    def stop_at_frame_3(frame: FrameRecord) -> None:
        if frame.frame_index == 3:
            raise StopRun

    out = tmp_path / "out"
    report = run_pipeline([video, events_video(tmp_path / "swan.mp4", video="blackswan")], out, engine, config(),
                          on_frame=stop_at_frame_3)
    assert report.interrupted == "StopRun" and report.exit_code == 0
    assert [s.status for s in report.sources] == ["interrupted", "pending"]  # the second video is never opened
    rows = read_results(out).num_rows
    assert rows == report.frames and 4 <= rows < 18  # the window holding frame 3, and at most the one after it


def test_stop_run_stops_every_group_running_at_once(engine, tmp_path):
    videos = [events_video(tmp_path / f"{name}.mp4", "B" * 30, video=name) for name in ("goat", "blackswan")]

    def stop_after_a_second(frame: FrameRecord) -> None:
        if frame.timestamp >= 1.0:
            raise StopRun

    out = tmp_path / "out"
    report = run_pipeline(videos, out, engine, config(live=True), on_frame=stop_after_a_second)
    assert report.interrupted == "StopRun" and [s.status for s in report.sources] == ["interrupted"] * 2
    assert 0 < read_results(out).num_rows == report.frames < 60


def test_iter_results_hands_over_each_frame_and_event_as_made(engine, video, tmp_path):
    out = tmp_path / "out"
    with iter_results([video], out, engine, config(), maxsize=2) as results:
        items = list(results)
    assert results.report is not None and results.report.exit_code == 0
    frames = [i.frame_index for i in items if isinstance(i, FrameRecord)]
    assert frames == list(range(18)) and spans([i for i in items if isinstance(i, EventRecord)]) == EXPECTED_EVENTS
    assert all(math.isfinite(i.timestamp) for i in items if isinstance(i, FrameRecord))


def test_leaving_iter_results_early_stops_the_run_and_keeps_its_results(engine, tmp_path):
    video = events_video(tmp_path / "long.mp4", "B" * 40)
    out = tmp_path / "out"
    with iter_results([video], out, engine, config(), maxsize=1) as results:
        for item in results:
            if item.frame_index == 2:
                break
    report = results.report
    assert report is not None and report.interrupted == "StopRun" and report.sources[0].status == "interrupted"
    assert 3 <= read_results(out).num_rows == report.frames < 40
    assert (out / "runs" / f"{report.run_id}.json").is_file()


def test_iter_results_raises_what_stopped_the_run(engine, video, tmp_path):
    with pytest.raises(ValueError, match="give an http"), iter_results([video], tmp_path / "out", engine,
                                                                    config(webhook=["http://"])) as results:
        list(results)
