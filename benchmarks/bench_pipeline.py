"""The pipeline's own rate: `run_pipeline` with the engine's calls replayed from a recording.

A GPU engine is 50x faster than a CPU core's share of a run, so what bounds a GPU run is everything
around the engine: decoding, resizing, upsampling the maps to each frame, masks, RLE, Parquet, events.
This measures exactly that on any machine. A first run records every engine call's output (the
classifier logits of the consensus sample, each window's maps); the timed runs replay them in the
same order without computing anything, so all that is left is the pipeline's own work.

The video is the bundled example (a 640x360 H.264 clip) scaled to 854x480 and played again to
``--frames`` frames, written as H.264 at 30 fps: the same file on every machine.

    python benchmarks/bench_pipeline.py --threads 1 --out benchmarks/results/pipeline_cpu.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import cv2
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from results_file import write_results  # noqa: E402

try:
    from streamcosal.inference.engine import CoSalEngine
    from streamcosal.run.pipeline import run_pipeline
    from streamcosal.run.records import PipelineConfig
except ImportError:  # the layout before the stage packages: to measure earlier versions the same way
    from streamcosal.engine import CoSalEngine  # type: ignore[no-redef]
    from streamcosal.pipeline import PipelineConfig, run_pipeline  # type: ignore[no-redef]

SIZE = (854, 480)


def make_video(path: Path, frames: int) -> Path:
    """examples/cat.mp4 scaled to 854x480 and looped to ``frames`` frames, H.264 at 30 fps."""
    with av.open(str(REPO / "examples" / "cat.mp4")) as source:
        clip = [f.to_ndarray(format="rgb24") for f in source.decode(video=0)]
    clip = [cv2.resize(f, SIZE, interpolation=cv2.INTER_LINEAR) for f in clip]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for i in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(clip[i % len(clip)], format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def key(x: torch.Tensor) -> tuple[tuple[int, ...], float]:
    """What identifies an engine call's input: its shape and the sum of every 8th pixel in each direction (groups
    running at once call in any order; the same frames give the same outputs, so a copy of a video replays its
    original's calls). The whole input's sum took 1.0 ms a frame for windows of 32 at 288 px (Zen4), timed as
    the pipeline's own; this 0.006 ms."""
    return tuple(x.shape), round(float(x[:, :, ::8, ::8].double().sum()), 3)


class Replay:
    """Records an engine's `logits` and `segment` outputs by their input, then replays them."""

    def __init__(self, engine: CoSalEngine) -> None:
        self.engine = engine
        self.logits_calls: dict[tuple, torch.Tensor] = {}
        self.segment_calls: dict[tuple, tuple[Any, torch.Tensor | None]] = {}  # (prediction, a consensus function's logits)
        self.engine_seconds = 0.0

    def record(self) -> None:
        logits, segment = type(self.engine).logits, type(self.engine).segment

        def recording_logits(x: torch.Tensor) -> torch.Tensor:
            start = time.perf_counter()
            out = logits(self.engine, x)
            self.engine_seconds += time.perf_counter() - start
            self.logits_calls[key(x)] = out
            return out

        def recording_segment(x: torch.Tensor, consensus: Any = None, prototype_prior: Any = None) -> Any:
            seen: list[torch.Tensor] = []
            if callable(consensus):
                function = consensus

                def consensus(window_logits: torch.Tensor) -> torch.Tensor:
                    seen.append(window_logits)
                    return function(window_logits)

            start = time.perf_counter()
            out = segment(self.engine, x, consensus, prototype_prior)
            self.engine_seconds += time.perf_counter() - start
            self.segment_calls[key(x)] = (out, seen[0] if seen else None)
            return out

        self.engine.logits, self.engine.segment = recording_logits, recording_segment  # type: ignore[method-assign]

    def replay(self) -> None:
        def replayed_segment(x: torch.Tensor, consensus: Any = None, prototype_prior: Any = None) -> Any:
            prediction, window_logits = self.segment_calls[key(x)]
            if callable(consensus) and window_logits is not None:
                consensus(window_logits)  # the running consensus is updated as in the recording
            return prediction

        self.engine.logits = lambda x: self.logits_calls[key(x)]  # type: ignore[method-assign]
        self.engine.segment = replayed_segment  # type: ignore[method-assign]


def archive_words(videos: int, settings: dict[str, int]) -> str:
    """How the table's header names what ran."""
    if videos == 1:
        return ""
    parallel = settings.get("parallel_groups", "the device's default")
    return f"an archive of {videos} copies (a group each, parallel_groups {parallel}) of "


def timed(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--modes", nargs="+", default=["global", "streaming"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the pipeline's other threads run beside)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--videos", type=int, default=1, help="an archive of this many copies of the video (a group each)")
    parser.add_argument("--parallel-groups", type=int, default=None, help="the run's parallel_groups (default: the device's)")
    parser.add_argument("--label", default="", help="what is measured (e.g. a commit), for the table")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scratch = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    video = make_video(scratch / "cat480.mp4", args.frames)
    archive = [video] + [shutil.copy(video, scratch / f"cat480_{i}.mp4") for i in range(1, args.videos)]
    frames = args.frames * len(archive)
    settings: dict[str, object] = {} if args.parallel_groups is None else {"parallel_groups": args.parallel_groups}
    if "batch_groups" in PipelineConfig.model_fields:  # versions before it batched nothing
        settings["batch_groups"] = False
    rows = []
    for mode in args.modes:
        engine = CoSalEngine.from_pretrained(device=args.device)
        replay = Replay(engine)
        replay.record()
        # each window its own engine call (recorded and replayed by its input), also where a GPU's run batches
        # the windows of videos at once (`batch_groups`: an engine matter, measured by bench_archive.py)
        config = PipelineConfig(mode=mode, **settings)  # the device's window, as a run's
        recording = timed(lambda: run_pipeline([video], scratch / f"record-{mode}", engine, config))  # copies: the same calls
        seconds = []
        for run in range(args.runs):
            replay.replay()
            seconds.append(timed(lambda: run_pipeline(archive, scratch / f"replay-{mode}-{run}", engine, config)))
        best, median = min(seconds), statistics.median(seconds)
        rows.append((mode, frames / best, frames / median, args.frames / recording, replay.engine_seconds / recording))
        print(f"{mode}: pipeline alone {frames / best:.1f} frames/s (median {frames / median:.1f}); "
              f"with the engine {args.frames / recording:.1f}", flush=True)
    cpu = platform.processor() or platform.machine()
    lines = [f"# The pipeline's own rate{': ' + args.label if args.label else ''}", "",
             f"`run_pipeline` on {archive_words(len(archive), settings)}an 854x480 H.264 video of {args.frames} frames "
             f"(the bundled example scaled and looped), the engine's calls replayed from a recording (\"with the engine\": "
             f"one video, recorded); {args.threads} torch thread(s), device "
             f"{args.device}; {os.cpu_count()} cores ({cpu}); torch {torch.__version__}; "
             f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; best and median of {args.runs} runs.", "",
             "| mode | pipeline alone, frames/s (best) | (median) | with the engine, frames/s | engine share |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {m} | {b:.1f} | {md:.1f} | {e:.1f} | {s:.0%} |" for m, b, md, e, s in rows]
    write_results("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
