"""`streamcosal video` end to end on an archive of 480p H.264 videos, and on one of them: frames/s.

Each video is the bundled example scaled to 854x480 and looped (`bench_pipeline.make_video`); the
command line runs as a user runs it, in its own process, model loading included in the wall time but
not in its own frames/s line (which this table reports).

    python benchmarks/bench_archive.py --device cuda --videos 4 --frames 1800 --out benchmarks/results/video_gpu.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import make_video  # noqa: E402
from results_file import write_results  # noqa: E402

CLI = [sys.executable, "-c", "from streamcosal.cli import app; app()"]


def run(videos: list[Path], out: Path, device: str, extra: list[str]) -> tuple[int, float, str, str]:
    """(frames, frames/s as the run reports them, its first line: model, device, precision; what decoded
    the videos, from the run report)."""
    done = subprocess.run([*CLI, "video", *map(str, videos), "--out", str(out), "--device", device, *extra],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"streamcosal video failed ({done.returncode}):\n{done.stderr[-3000:]}")
    match = re.search(r"(\d+) frames in ([\d.]+) s \(([\d.]+) frames/s\)", done.stdout)
    if match is None:
        raise SystemExit(f"no summary line in:\n{done.stdout}")
    report = json.loads(next((out / "runs").glob("*.json")).read_text())
    decoders = sorted({source["decoder"] for source in report["sources"]})
    return int(match[1]), float(match[3]), done.stderr.splitlines()[0], "; ".join(decoders)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=1800, help="frames per video")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    first = make_video(scratch / "video0.mp4", args.frames)
    videos = [first]
    for i in range(1, args.videos):  # distinct files (hard links): one group each
        (scratch / f"video{i}.mp4").hardlink_to(first)
        videos.append(scratch / f"video{i}.mp4")
    rows = []
    archive = f"archive of {len(videos)} videos"
    for label, batch, extra in (("one video", videos[:1], []), (archive, videos, []),
                                ("one video, `--decoder cpu`", videos[:1], ["--decoder", "cpu"]),
                                (f"{archive}, `--decoder cpu`", videos, ["--decoder", "cpu"]),
                                ("one video, bilinear at 224", videos[:1], ["--upsampling", "bilinear", "--input-size", "224"])):
        frames, rate, first_line, decoders = run(batch, scratch / f"out-{len(rows)}", args.device, extra)
        rows.append(f"| {label} | {decoders} | {frames} | {rate:.0f} |")
        print(rows[-1], "|", first_line, flush=True)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    lines = ["# `streamcosal video` end to end", "",
             f"854x480 H.264 videos of {args.frames} frames each (the bundled example scaled and looped), "
             f"`--device {args.device}`, default model and precision; {gpu}, {os.cpu_count()} CPU cores, torch "
             f"{torch.__version__}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. frames/s as the run reports it "
             "(from its first frame to its results saved; model loading excluded). Model line: " + first_line, "",
             "| what | decoded by | frames | frames/s |", "|---|---|---:|---:|", *rows]
    write_results("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
