"""Parquet results: masks, the atomic writer, readers without our code, events."""

import dataclasses
import math
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from streamcosal.storage import (
    RESULT_SCHEMA,
    FrameResult,
    ResultWriter,
    decode_mask,
    decode_prob_png,
    detect_events,
    encode_mask,
    encode_prob_png,
    events_from_results,
    mask_stats,
    parquet_files,
    read_events,
    read_results,
    write_events,
)
from streamcosal.storage.schema import SCHEMA_VERSION_KEY


def _result(source: str, frame: int, mask: np.ndarray | None = None) -> FrameResult:
    if mask is None:
        mask = np.zeros((12, 16), bool)
        mask[2:6, 3 : 3 + frame % 5] = True
    return FrameResult(
        source=source,
        group="swan",
        window=frame // 4,
        frame_index=frame,
        timestamp=frame / 25.0,
        mask=mask,
        mean_prob=0.8,
        similarity=0.5,
        model_name="gicd-vgg16",
        model_version="1.0",
    )


def _visible_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# --- masks -------------------------------------------------------------------------------------


def test_rle_round_trip_on_a_davis_mask(data: Path) -> None:
    mask = np.array(Image.open(data / "davis2016" / "masks" / "blackswan" / "00000.png")) > 0  # 0/255 PNG
    assert mask.any() and not mask.all()
    rle = encode_mask(mask)
    assert rle["size"] == list(mask.shape) and isinstance(rle["counts"], bytes)
    assert np.array_equal(decode_mask(rle), mask)


def test_encode_mask_rejects_a_255_mask_with_a_hint() -> None:
    with pytest.raises(ValueError, match="mask > 0"):
        encode_mask(np.full((4, 4), 255, np.uint8))


def test_mask_stats_against_hand_computation() -> None:
    prob = np.zeros((4, 6), np.float32)
    prob[1, 2] = 0.9
    prob[2, 4] = 0.5  # on the threshold: inside
    prob[3, 0] = 0.49  # below: outside
    mask, bbox, area, mean_prob = mask_stats(prob, threshold=0.5)
    assert mask.sum() == 2 and mask[1, 2] and mask[2, 4]
    assert bbox == (2, 1, 3, 2)  # x from 2 to 4, y from 1 to 2
    assert area == pytest.approx(2 / 24)
    assert mean_prob == pytest.approx((0.9 + 0.5) / 2)


def test_mask_stats_empty_mask_and_bad_input() -> None:
    mask, bbox, area, mean_prob = mask_stats(np.zeros((3, 3), np.float32))
    assert not mask.any() and bbox is None and area == 0.0 and mean_prob == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mask_stats(np.full((3, 3), 4.0))


def test_prob_png_is_small_and_close() -> None:
    prob = np.linspace(0, 1, 480 * 854, dtype=np.float32).reshape(480, 854)
    png = encode_prob_png(prob, max_side=128)
    small = decode_prob_png(png)
    assert max(small.shape) == 128 and len(png) < 40_000
    assert abs(small.mean() - prob.mean()) < 0.01


# --- writer and readers ------------------------------------------------------------------------


def test_write_read_with_our_reader_duckdb_and_pandas(tmp_path: Path) -> None:
    sources = ["/data/videos/blackswan.mp4", "rtsp://cam-3.local:554/stream?ch=1"]
    with ResultWriter(tmp_path, "run-1", flush_every=4) as writer:
        for frame in range(10):
            writer.write(_result(sources[frame % 2], frame))

    table = read_results(tmp_path)
    assert table.num_rows == 10 and table.schema.equals(RESULT_SCHEMA)
    assert set(table["source"].to_pylist()) == set(sources)
    row = table.filter(pa.compute.equal(table["frame_index"], 3)).to_pylist()[0]
    assert np.array_equal(decode_mask(row), _result(sources[1], 3).mask)
    assert row["bbox"] == [3, 2, 3, 4] and row["area_fraction"] == pytest.approx(12 / 192)

    frames_glob = f"{tmp_path}/frames/**/*.parquet"
    counts = duckdb.sql(
        "select source, count(*) as n, count(distinct source_key) as k "
        f"from read_parquet('{frames_glob}', hive_partitioning=true) "
        "group by source order by source"
    ).fetchall()
    assert counts == [(sources[0], 5, 1), (sources[1], 5, 1)]

    df = pd.read_parquet(tmp_path / "frames")
    assert len(df) == 10
    assert np.array_equal(decode_mask(df[df.frame_index == 3].iloc[0]), _result("", 3).mask)


def test_second_run_appends_without_overwriting(tmp_path: Path) -> None:
    with ResultWriter(tmp_path, "run-a", flush_every=3) as writer:
        for frame in range(7):
            writer.write(_result("cam", frame))
    first_files = {p: p.read_bytes() for p in _visible_files(tmp_path)}

    with ResultWriter(tmp_path, "run-b", flush_every=3) as writer:
        for frame in range(7):
            writer.write(_result("cam", frame))

    assert read_results(tmp_path).num_rows == 14
    assert all(p.read_bytes() == data for p, data in first_files.items())
    assert len(_visible_files(tmp_path)) == 2 * len(first_files)
    assert not [p for p in _visible_files(tmp_path) if p.name.startswith(".")]
    with pytest.raises(FileExistsError, match="run-a"):
        ResultWriter(tmp_path, "run-a")


def test_crash_inside_the_writer_leaves_readable_data(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with ResultWriter(tmp_path, "run-1", flush_every=2) as writer:
            for frame in range(5):
                writer.write(_result("cam", frame))
            raise KeyboardInterrupt
    assert read_results(tmp_path).num_rows == 5  # the buffered row is kept on the way out
    assert duckdb.sql(f"select count(*) from '{tmp_path}/frames/**/*.parquet'").fetchall() == [(5,)]


def test_failure_while_writing_a_file_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = ResultWriter(tmp_path, "run-1", flush_every=2)
    for frame in range(4):
        writer.write(_result("cam", frame))  # two complete files

    def write_half_then_die(table: pa.Table, where, **kwargs) -> None:
        where.write(b"PAR1 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(parquet_files.pq, "write_table", write_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        for frame in range(4, 6):
            writer.write(_result("cam", frame))
    monkeypatch.undo()

    assert len(_visible_files(tmp_path)) == 2  # no hidden temporary file left behind
    assert read_results(tmp_path).num_rows == 4
    assert len(pd.read_parquet(tmp_path / "frames")) == 4


def test_version_1_files_are_read_with_a_null_latency_and_others_refused(tmp_path: Path) -> None:
    """Schema 2 added latency_s (live sources); files of version 1 (without it) read as null."""
    with ResultWriter(tmp_path, "run-1") as writer:
        writer.write(dataclasses.replace(_result("cam", 0), latency_s=0.25))
    path = _visible_files(tmp_path)[0]
    table = pq.read_table(path)
    metadata = {**table.schema.metadata, SCHEMA_VERSION_KEY: b"1"}
    old = table.drop_columns(["latency_s"]).replace_schema_metadata(metadata)
    pq.write_table(old, path.with_name("run-0.000000.parquet"))
    rows = sorted(read_results(tmp_path).to_pylist(), key=lambda r: r["latency_s"] is not None)
    assert [r["latency_s"] for r in rows] == [None, 0.25]  # the version 1 row, then ours
    pq.write_table(old.replace_schema_metadata({**metadata, SCHEMA_VERSION_KEY: b"9"}), path.with_name("x.parquet"))
    with pytest.raises(ValueError, match="schema version 9"):
        read_results(tmp_path)


def test_reader_names_a_foreign_file(tmp_path: Path) -> None:
    with ResultWriter(tmp_path, "run-1") as writer:
        writer.write(_result("cam", 0))
    stranger = _visible_files(tmp_path)[0].with_name("x.parquet")
    pq.write_table(pa.table({"a": [1]}), stranger)
    with pytest.raises(ValueError, match="x.parquet"):
        read_results(tmp_path)


def test_bad_run_id_and_missing_root_are_explained(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="file names"):
        ResultWriter(tmp_path, "../etc")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_results(tmp_path / "nowhere")


# --- events ------------------------------------------------------------------------------------


def test_detect_events_bridges_gaps_and_drops_blips() -> None:
    fps = 10
    t = np.arange(60) / fps
    area = np.zeros(60)
    area[5:20] = 0.1  # 0.5 s .. 1.9 s
    area[23:30] = 0.2  # gap of 0.4 s after 1.9 s: bridged
    area[31] = 0.01  # under the threshold inside the event: bridged too
    area[40:43] = 0.3  # 0.2 s blip: dropped
    area[50:58] = 0.05  # 5.0 s .. 5.7 s: its own event (gap 2 s)

    events = detect_events(t, np.arange(60), area, threshold=0.02, min_duration=0.5, max_gap=0.5)

    assert [(e.start_frame, e.end_frame) for e in events] == [(5, 29), (50, 57)]
    first = events[0]
    assert first.start_time == pytest.approx(0.5) and first.end_time == pytest.approx(2.9)
    assert first.duration == pytest.approx(2.4) and first.n_frames == 25
    assert first.peak_area_fraction == pytest.approx(0.2)
    assert first.mean_area_fraction == pytest.approx((15 * 0.1 + 7 * 0.2) / 25)


def test_event_rules_scale_with_the_interval_between_processed_frames() -> None:
    """The same presence sampled at 10, 1 and 1/0.6 frames per second gives the same event."""
    for step in (0.1, 1.0, 0.6):
        t = np.arange(0, 6, step)
        area = np.where(t < 4.5, 0.1, 0.0)
        area[(t > 2.0) & (t < 2.5)] = 0.0  # an absence of under 0.5 s: bridged where sampled
        (event,) = detect_events(t, np.arange(len(t)), area, min_duration=0.5, max_gap=0.5)
        assert event.start_time == 0.0 and event.end_time == pytest.approx(t[t < 4.5][-1]), step
    lone = detect_events(np.arange(6.0), np.arange(6), np.array([0, 0, 0.1, 0, 0, 0]), min_duration=0.5)
    assert [(e.start_frame, e.end_frame) for e in lone] == [(2, 2)]  # one frame at 1 fps covers 1 s


def test_detect_events_sorts_its_input_and_handles_nothing() -> None:
    t = np.array([0.3, 0.0, 0.2, 0.1])
    events = detect_events(t, np.array([3, 0, 2, 1]), np.ones(4), min_duration=0.1)
    assert [(e.start_frame, e.end_frame, e.n_frames) for e in events] == [(0, 3, 4)]
    assert detect_events(t, np.arange(4), np.zeros(4)) == []


def test_frames_without_timestamps_have_no_events(tmp_path: Path) -> None:
    """Image groups have NaN timestamps: no time, no events (was one event with NaN times)."""
    t = np.full(6, np.nan)
    assert detect_events(t, np.arange(6), np.ones(6), min_duration=0.0) == []
    with ResultWriter(tmp_path, "run-1") as writer:
        for i in range(6):
            writer.write(dataclasses.replace(_result("photos", i, np.ones((12, 16), bool)), timestamp=math.nan))
    assert events_from_results(read_results(tmp_path), min_duration=0.0).num_rows == 0
    mixed = t.copy()  # a series with some timed frames keeps its events over those frames
    mixed[2:] = np.arange(4) / 10
    events = detect_events(mixed, np.arange(6), np.ones(6), min_duration=0.1)
    assert [(e.start_frame, e.end_frame, e.start_time) for e in events] == [(2, 5, 0.0)]


def test_events_from_results_written_next_to_them(tmp_path: Path) -> None:
    present = np.ones((12, 16), bool)
    with ResultWriter(tmp_path, "run-1") as writer:
        for frame in range(50):  # 2 s at 25 fps, present from frame 10 to 39
            mask = present if 10 <= frame < 40 else np.zeros_like(present)
            writer.write(_result("cam-a", frame, mask))
            writer.write(_result("cam-b", frame, np.zeros_like(present)))

    events = events_from_results(read_results(tmp_path))
    paths = write_events(tmp_path, events)

    assert len(paths) == 1 and paths[0].is_relative_to(tmp_path / "events")
    rows = read_events(tmp_path).to_pylist()
    assert len(rows) == 1
    assert rows[0]["source"] == "cam-a" and rows[0]["run_id"] == "run-1"
    assert (rows[0]["start_frame"], rows[0]["end_frame"], rows[0]["n_frames"]) == (10, 39, 30)
    assert read_results(tmp_path).num_rows == 100  # events do not leak into the frame table
    (tmp_path / "quiet").mkdir()  # a results root where no run had an event: empty, no error
    assert read_events(tmp_path / "quiet").num_rows == 0
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_events(tmp_path / "nowhere")
