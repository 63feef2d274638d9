"""Live cameras: a 25 fps 1280x720 RTSP camera (GStreamer's RTSP server on 127.0.0.1) for a fixed
time through `run_pipeline` with the default engine (auto precision, freed memory kept, as the CLI
runs it); processed frames/s, drop rate, latency and
memory, per drop policy, with and without a latency target (`--max-latency`: windows sized to
fit it), and with two cameras in one group.

The cameras are tests/rtsp_server.py (Debian's /usr/bin/python3 with GStreamer's RTSP server; see
the README's Tests section) looping 2 s of DAVIS frames scaled to 1280x720. Latency is each
result's `latency_s` (frame arrival to result row). "Behind" is how far the last result's stream
time lags the camera at the end of the run: bounded when frames are dropped, growing with `all`.

    python benchmarks/bench_live.py --seconds 120 --out benchmarks/results/live_cpu.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from streamcosal.inference.allocator import keep_freed_memory
from streamcosal.inference.engine import CoSalEngine
from streamcosal.run.pipeline import run_pipeline
from streamcosal.run.records import PipelineConfig
from streamcosal.storage import read_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from results_file import write_results  # noqa: E402
from rtsp_camera import make_clip, rtsp_camera  # noqa: E402

SIZE, FPS = (1280, 720), 25
NO_TARGET = 3600.0  # a --max-latency that never shrinks a window: the fixed windows of before


def rss_mb() -> float:
    """Resident set size of this process, MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(engine: CoSalEngine, clips: list[Path], policy: str, seconds: float, window: int, max_latency: float,
            folder: Path) -> str:
    """One configuration: a Markdown table row."""
    mounts = {f"/cam{i}": clip for i, clip in enumerate(clips)}
    out = folder / f"{policy}-{len(clips)}-{window}-{max_latency:g}"
    with rtsp_camera(mounts) as camera:
        config = PipelineConfig(window=window, drop_policy=policy, duration=seconds,  # type: ignore[arg-type]
                                max_latency=max_latency)
        before = rss_mb()
        start = time.monotonic()
        report = run_pipeline([camera.url(m) for m in mounts], out, engine, config,
                              group="lobby" if len(clips) > 1 else None)
        wall = time.monotonic() - start
        grown = rss_mb() - before
    table = read_results(out)
    latency = np.array(table["latency_s"].to_pylist())
    per_window = len(table) / len(set(table["window"].to_pylist()))  # frames per window, all cameras
    runs = report.sources
    received = sum(r.live.received for r in runs)
    dropped = sum(r.live.dropped for r in runs)
    behind = max(wall - (r.last_timestamp or 0.0) for r in runs)
    p50, p95 = np.percentile(latency, [50, 95])
    target = "none" if max_latency >= NO_TARGET else f"{max_latency:g}"
    return (f"| {len(clips)} | {engine.precision} | {policy} | {window} | {target} | {per_window:.1f} | {seconds:.0f} | "
            f"{report.frames / wall:.2f} | "
            f"{dropped / max(received, 1):.1%} | {p50:.2f} | {p95:.2f} | {latency.max():.2f} | {behind:.1f} | {grown:+.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="length of each run")
    parser.add_argument("--out", type=Path, help="write the Markdown table here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        folder = Path(tmp)
        clips = [make_clip(folder / f"{name}.mp4", name, frames=2 * FPS, fps=FPS, size=SIZE)
                 for name in ("blackswan", "goat")]
        keep_freed_memory()  # as the CLI, jobs and flows do
        engine = CoSalEngine.from_pretrained()  # auto precision, as the CLI
        load = os.getloadavg()[0]
        rows = [
            measure(engine, clips[:1], "latest", args.seconds, 8, 1.0, folder),
            measure(engine, clips[:1], "latest", args.seconds, 8, NO_TARGET, folder),
            measure(engine, clips[:1], "all", args.seconds / 2, 8, 1.0, folder),
            measure(engine, clips, "latest", args.seconds, 8, 1.0, folder),
        ]
        load = (load + os.getloadavg()[0]) / 2
    text = "\n".join([
        f"# Live cameras: {SIZE[0]}x{SIZE[1]} {FPS} fps RTSP on 127.0.0.1, default engine ({engine.name} "
        f"{engine.version}, input {engine.size_for([(SIZE[1], SIZE[0])])})",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"load average about {load:.1f} (other jobs share this machine), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| cameras | precision | policy | window | max latency s | mean window | seconds | processed frames/s | dropped "
        "| latency p50 s | p95 s | max s | behind at end s | RSS growth MiB |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
    ])
    write_results(text, args.out)


if __name__ == "__main__":
    main()
