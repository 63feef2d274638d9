"""A full disk is a clear error naming the folder and what was kept, with a
non-zero exit, and leaves no temporary file. The disks are real: a small tmpfs mounted here
(the tests run as root, here and in CI)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import untrained_checkpoint
from test_user_mistakes import photos
from video_fixtures import davis_frames, encode_video

from streamcosal.run.overlay import VideoSink

CLI = [sys.executable, "-c", "from streamcosal.cli import app; app()"]


@pytest.fixture
def small_disk(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A tmpfs of request.param bytes mounted at tmp_path/disk (unmounted after the test)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={request.param}", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"these tests mount a small tmpfs and need root: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=True)  # lazy: even if a file there is still open


@pytest.fixture(scope="module")
def dev_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return untrained_checkpoint(tmp_path_factory.mktemp("ck"), 64, "dev.pt")


@pytest.fixture(scope="module")
def clip(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """150 frames of 640x384 H.264 (an overlay of it takes about a megabyte)."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    encode_video(davis_frames("blackswan", n=50, size=(640, 384)) * 3, path, fps=10)
    return path


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


@pytest.mark.parametrize("small_disk", ["150k"], indirect=True)
def test_overlays_on_a_full_disk_end_with_a_message_and_no_temporary_file(small_disk, clip, dev_checkpoint):
    out = small_disk / "out"
    done = subprocess.run([*CLI, "video", str(clip), "--out", str(out), "--overlay", "--weights", str(dev_checkpoint)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr and "No space left on device" in done.stderr
    assert f"free space in {out / 'overlays'}" in done.stderr
    assert leftovers(small_disk) == []


@pytest.mark.parametrize("small_disk", ["16k"], indirect=True)
def test_results_on_a_full_disk_end_with_a_message(small_disk, clip, dev_checkpoint):
    out = small_disk / "out"
    done = subprocess.run([*CLI, "video", str(clip), "--out", str(out), "--weights", str(dev_checkpoint)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr and "not saved: cannot write" in done.stderr
    assert "No space left on device" in done.stderr
    assert leftovers(small_disk) == []


@pytest.mark.parametrize("small_disk", ["40k"], indirect=True)
def test_images_on_a_full_disk_stop_and_say_what_was_kept(small_disk, data, tmp_path, dev_checkpoint):
    inp = tmp_path / "in"
    for group in ("Horse", "Cat", "Dog"):
        photos(data, inp / group, n=4, group=group)
    done = subprocess.run([*CLI, "images", str(inp), "--out", str(small_disk / "maps"), "--weights", str(dev_checkpoint)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    kept = len(list((small_disk / "maps").rglob("*.png")))
    assert 0 < kept < 12
    assert "No space left on device" in done.stderr and f"the {kept} maps written to" in done.stderr
    assert "Traceback" not in done.stderr
    assert leftovers(small_disk) == []


@pytest.mark.parametrize("small_disk", ["200k"], indirect=True)
def test_video_sink_on_a_full_disk_removes_its_file_and_closes(small_disk):
    sink = VideoSink(small_disk / "noise.mp4", fps=10)
    rng = np.random.default_rng(0)
    with pytest.raises(OSError, match=f"noise.mp4 not written .*free space in {small_disk}"):
        for i in range(300):  # noise does not compress: the disk fills
            sink.write(rng.integers(0, 255, (96, 160, 3), dtype=np.uint8), i / 10)
    assert sink.close() is None
    assert os.listdir(small_disk) == []
