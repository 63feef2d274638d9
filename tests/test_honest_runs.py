"""Runs that never lie: a killed run's rows never read as current, a re-run replaces a source's rows,
a source given twice runs once, a results folder deleted under a run is an error. Real processes,
real signals, a real H.264 file."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest
from conftest import untrained_checkpoint
from video_fixtures import davis_frames, encode_video

from streamcosal.storage import read_results

CLI = [sys.executable, "-c", "from streamcosal.cli import app; app()"]
FRAMES = 150


@pytest.fixture(scope="module")
def dev_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return untrained_checkpoint(tmp_path_factory.mktemp("ck"), 64, "dev.pt")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    encode_video(davis_frames("blackswan", n=50, size=(320, 192)) * 3, path, fps=10)
    return path


def video(clips: list[Path], out: Path, checkpoint: Path, *extra: str) -> list[str]:
    return [*CLI, "video", *map(str, clips), "--out", str(out), "--weights", str(checkpoint), *extra]


def started(out: Path, process: subprocess.Popen, timeout_s: float = 120) -> None:
    """Wait until the run has written its first (hidden, uncommitted) rows."""
    deadline = time.monotonic() + timeout_s
    while not list((out / "frames").glob("source_key=*/.*.parquet")):
        assert process.poll() is None, f"the run ended before writing: {process.communicate()}"
        assert time.monotonic() < deadline, "no rows written in time"
        time.sleep(0.01)


def hidden(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]


def test_a_killed_run_is_never_read_and_the_next_run_sets_it_aside(clip, dev_checkpoint, tmp_path):
    out = tmp_path / "out"
    killed = subprocess.Popen(video([clip], out, dev_checkpoint, "--flush-every", "4", "--overlay"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started(out, killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert read_results(out).num_rows == 0  # what it wrote is not part of the results
    done = subprocess.run(video([clip], out, dev_checkpoint, "--overlay"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"note: run \S+ was killed before it finished: its \d+ result files were moved to", done.stderr)
    rows = read_results(out)
    assert rows.num_rows == FRAMES and len(pc.unique(rows["run_id"])) == 1
    assert sorted(rows["frame_index"].to_pylist()) == list(range(FRAMES))
    assert list((out / "unfinished").glob("*/frames/source_key=*/*.parquet"))  # kept apart, readable
    assert hidden(out) == []  # the killed run's temporary overlay and hidden rows are gone from the results


def test_a_rerun_replaces_the_sources_rows_and_a_repeated_source_runs_once(clip, dev_checkpoint, tmp_path):
    out = tmp_path / "out"
    first = subprocess.run(video([clip, clip], out, dev_checkpoint), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"{clip} is listed more than once" in first.stderr
    assert read_results(out).num_rows == FRAMES
    again = subprocess.run(video([clip], out, dev_checkpoint), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = read_results(out)
    assert rows.num_rows == FRAMES and len(pc.unique(rows["run_id"])) == 1  # the new run's rows only
    kept = subprocess.run(video([clip], out, dev_checkpoint, "--keep-history"), capture_output=True, text=True,
                          timeout=300)
    assert kept.returncode == 0 and read_results(out).num_rows == 2 * FRAMES


def test_a_results_folder_deleted_during_the_run_is_an_error(clip, dev_checkpoint, tmp_path):
    out = tmp_path / "out"
    run = subprocess.Popen(video([clip], out, dev_checkpoint, "--flush-every", "4"), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    started(out, run)
    out.rename(tmp_path / "deleted")  # at once: a removal file by file races the run's new files
    shutil.rmtree(tmp_path / "deleted")
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 1, stderr[-3000:]
    assert f"the results folder {out} was deleted or replaced during the run" in stderr
    assert not re.search(r"^\s+done\s", stdout, re.M), stdout
