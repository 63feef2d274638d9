"""RunLayout: every file of a run carries its run id in its name, so a run's files are found without
reading any (the archive opened every events file per run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from streamcosal.run import archive
from streamcosal.storage import FrameResult, ResultWriter, RunLayout, detect_events, events_table, write_events
from streamcosal.storage.parquet_files import write_by_source


def a_run(out: Path, run_id: str, sources: tuple[str, ...] = ("cam-a", "cam-b")) -> None:
    with ResultWriter(out, run_id, flush_every=2) as writer:
        for source in sources:
            for i in range(3):
                writer.write(FrameResult(source=source, group="g", window=0, frame_index=i, timestamp=i / 4,
                                         mask=np.ones((4, 6), bool), mean_prob=0.9, similarity=1.0,
                                         model_name="m", model_version="v"))
    events = [events_table(run_id, s, "g", detect_events(np.arange(3) / 4, np.arange(3), np.ones(3), min_duration=0.1))
              for s in sources]
    for table in events:
        write_events(out, table)
    RunLayout(out, run_id).overlays.mkdir(parents=True)
    RunLayout(out, run_id).report.parent.mkdir(parents=True, exist_ok=True)
    RunLayout(out, run_id).report.write_text("{}")


def test_a_runs_files_are_found_by_name(tmp_path: Path) -> None:
    a_run(tmp_path, "arc-0000000000000001")
    a_run(tmp_path, "arc-00000000000000012")  # a run id that the first one prefixes
    a_run(tmp_path, "cli-run", sources=("cam-a",))
    layout = RunLayout(tmp_path, "arc-0000000000000001")
    files = layout.files()
    events = [p for p in files if p.parts[-3] == "events"]
    assert len(events) == 2 and all(p.name.startswith("arc-0000000000000001.events-") for p in events)
    frames = [p for p in files if p.parts[-3] == "frames"]
    assert frames == sorted((tmp_path / "frames").glob("*/arc-0000000000000001.0*.parquet")) and len(frames) >= 2
    assert layout.overlays in files and layout.report in files and len(files) == len(frames) + 4
    assert RunLayout.run_ids(tmp_path, "arc-") == {"arc-0000000000000001", "arc-00000000000000012"}
    assert RunLayout.run_ids(tmp_path) == {"arc-0000000000000001", "arc-00000000000000012", "cli-run"}


def test_event_files_written_before_they_carried_the_run_id_are_still_found(tmp_path: Path) -> None:
    a_run(tmp_path, "arc-0000000000000001")
    old = events_table("arc-0000000000000002", "cam-a", "g",
                       detect_events(np.arange(3) / 4, np.arange(3), np.ones(3), min_duration=0.1))
    (legacy,) = write_by_source(tmp_path / "events", old, "events-0123456789abcdef.parquet")
    assert archive.archive_run_ids(tmp_path) == {"arc-0000000000000001", "arc-0000000000000002"}
    assert archive.run_files(tmp_path, "arc-0000000000000002") == [legacy]
    assert legacy not in archive.run_files(tmp_path, "arc-0000000000000001")
