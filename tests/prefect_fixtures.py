"""Helpers for the orchestration tests: a dev checkpoint, short real clips, a tiny dataset, and
processes that are always stopped by their process group.

Plain functions (the test modules wrap them in fixtures), so importing this module starts nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Sequence

from video_fixtures import davis_frames, encode_video

CLIP_FRAMES = 8  # the engine does a few frames/s on this CPU: keep clips short


def dev_checkpoint(folder: Path) -> Path:
    """An untrained GICD (EfficientNet-Lite0) checkpoint, version "dev": stands in for the default weights.

    Seeded, so every session gets the same one: its maps sit near 0.48 (see ``DEV_THRESHOLD``)."""
    import torch

    from streamcosal.model import GICD, build_backbone, save_checkpoint

    path = folder / "gicd_dev.pt"
    if not path.exists():
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = GICD(build_backbone("efficientnet_lite0"))
        save_checkpoint(model, path, input_size=224, version="dev")
    return path


DEV_THRESHOLD = 0.486  # the dev checkpoint's maps are 0.476-0.492: this gives masks that are neither empty nor full


def clip(folder: Path, video: str, n: int = CLIP_FRAMES) -> Path:
    """A real H.264 clip of n DAVIS frames (160x96, 8 fps)."""
    path = folder / f"{video}.mp4"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        encode_video(davis_frames(video, n=n), path, fps=8)
    return path


def tiny_dataset(data: Path, folder: Path, groups: Sequence[str] = ("Cat", "Dog"), n: int = 2) -> Path:
    """A dataset in the images/ + masks/ layout with n real PASCAL images per group (symlinks)."""
    root = folder / "tiny"
    for group in groups:
        for image in sorted((data / "pascal_coseg" / "images" / group).glob("*.jpg"))[:n]:
            mask = data / "pascal_coseg" / "masks" / group / f"{image.stem}.png"
            for kind, src in (("images", image), ("masks", mask)):
                dst = root / kind / group / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.exists():
                    dst.symlink_to(src)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Processes a test starts, each in its own session; ``stop_all`` ends each by its process group
    (SIGTERM, then SIGKILL), also when the test failed. Output goes to log files (read on failure)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> subprocess.Popen:
        log = self.folder / f"{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(list(argv), env=env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.started.append((process, log))
        return process

    def log(self, process: subprocess.Popen) -> str:
        for p, log in self.started:
            if p is process:
                return log.read_text(errors="replace")[-6000:]
        return ""

    def stop_all(self, grace_s: float = 10.0) -> None:
        for process, _ in reversed(self.started):
            stop_group(process, grace_s)


def stop_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the process group of ``process`` (it leads its own session), SIGKILL it if it lingers."""
    if process.poll() is None:
        with _quiet():
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    with _quiet():  # children of the group may outlive the leader
        os.killpg(process.pid, signal.SIGKILL)
    with _quiet():
        process.wait(5)


def _quiet() -> contextlib.suppress:
    return contextlib.suppress(ProcessLookupError, PermissionError, subprocess.TimeoutExpired)


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, interval_s: float = 0.5,
             alive: subprocess.Popen | None = None, log: Callable[[], str] = lambda: "") -> float:
    """Poll ``check`` until true; returns the seconds waited. Fails with the log when it times out or
    when ``alive`` exits first."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {alive.returncode} first:\n{log()}")
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"{what}: not after {timeout_s:.0f} s:\n{log()}")
        time.sleep(interval_s)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def streamcosal_command() -> list[str]:
    """The ``streamcosal`` console script (or the module when it is not on PATH)."""
    exe = shutil.which("streamcosal")
    return [exe] if exe else [sys.executable, "-c", "from streamcosal.cli import app; app()"]
