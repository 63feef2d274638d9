"""End-to-end video speed against the engine's own speed on the same frames, and memory growth.

1. Speed: a 480p H.264 video (DAVIS frames at 854x480). The engine alone gets the frames already
   decoded and resized in memory and does exactly the pipeline's engine work (global: one
   classifier pass over the consensus sample, then `segment` per window; streaming: `segment` per
   window, its backbone pass also giving the new frames' logits for the running consensus). End to end is `run_pipeline` on the
   file: decoding, resizing, engine, full-size masks, RLE, Parquet, events. Runs alternate
   (engine, pipeline, engine, pipeline, ...) and medians are reported, because other jobs share
   this machine. The engine is built once, outside the timings.
2. Memory: a long video of small frames through `run_pipeline` (overlay on), with the resident
   set size sampled after every window; the growth is fitted after a warm-up and extrapolated.

    python benchmarks/bench_video.py --weights CHECKPOINT --out benchmarks/results/video_cpu.md
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from streamcosal.inference.allocator import keep_freed_memory
from streamcosal.inference.engine import CoSalEngine
from streamcosal.io.open import open_source
from streamcosal.model import consensus_from_logits
from streamcosal.params import MIN_INPUT_SIZE
from streamcosal.run.overlay import highlight
from streamcosal.run.pipeline import run_pipeline
from streamcosal.run.prototypes import RunningPrototype
from streamcosal.run.records import PipelineConfig
from streamcosal.run.windows import Window, global_windows, sample_consensus_frames, streaming_windows
from streamcosal.storage import FrameResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from results_file import write_results  # noqa: E402
from video_fixtures import DAVIS_IMAGES, encode_video, load_frames  # noqa: E402


def rss_mb() -> float:
    """Resident set size of this process, MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


STARTUP = """
import time
start = time.perf_counter()
import torch
torch.set_num_threads({threads})
from streamcosal.inference.engine import CoSalEngine
from streamcosal.run.pipeline import run_pipeline
imported = time.perf_counter()
engine = CoSalEngine.{build}
loaded = time.perf_counter()
engine.segment(torch.rand(8, 3, engine.max_input_size, engine.max_input_size))  # 854x480 runs at the largest
done = time.perf_counter()
print(imported - start, loaded - imported, done - loaded, engine.precision)
"""


def startup(weights: Path | None, threads: int) -> dict[str, object]:
    """Seconds of a fresh process: import (torch, streamcosal), model load, first batch of 8."""
    build = f"from_checkpoint({str(weights)!r})" if weights else "from_pretrained()"
    out = subprocess.run([sys.executable, "-c", STARTUP.format(build=build, threads=threads)], capture_output=True, text=True, check=True)
    imported, loaded, first, precision = out.stdout.split()
    result = {"import": float(imported), "load": float(loaded), "first_batch": float(first), "precision": precision}
    print(result, flush=True)
    return result


def engine_alone(engine: CoSalEngine, video: Path, config: PipelineConfig) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, frames) of the pipeline's engine calls on pre-decoded frames."""
    with open_source(video) as source:
        sample = sample_consensus_frames(source, config.consensus_frames)
        frames = list(source)
    if config.mode == "global":
        windows = list(global_windows(frames, config.window))
    else:
        windows = list(streaming_windows(frames, config.window, config.step))
    size = engine.size_for(f.image.shape for f in frames)  # the pipeline's size for this video
    xs = [torch.stack([engine.prepare(f.image, size) for f in w.frames]) for w in windows]
    x_sample = torch.stack([engine.prepare(f.image, size) for f in sample])
    start, cpu = time.perf_counter(), time.process_time()
    prototype = RunningPrototype(config.half_life if config.mode == "streaming" else None, recent=config.window)
    if config.mode == "global":
        consensus = consensus_from_logits(engine.logits(x_sample))
        for w, x in zip(windows, xs):
            prototype.add(w, engine.segment(x, consensus, prototype.prior(w)))
    else:
        running = [torch.zeros(1, 1000)]

        def add(w: Window, logits: torch.Tensor) -> torch.Tensor:  # the running consensus, as the store keeps it
            new = [i for i, e in enumerate(w.emit) if e]
            running[0] = running[0] * 0.9 + logits[new].sum(0, keepdim=True)
            return torch.softmax(running[0], 1)

        for w, x in zip(windows, xs):
            prototype.add(w, engine.segment(x, functools.partial(add, w), prototype.prior(w)))
    return time.perf_counter() - start, time.process_time() - cpu, len(frames)


def pipeline_run(engine: CoSalEngine, video: Path, config: PipelineConfig, scratch: Path) -> tuple[float, float, int, float]:
    """(wall seconds, CPU seconds of every thread, frames, share of the wall time spent in engine calls)
    of `run_pipeline` on the video."""
    out = scratch / "out"
    shutil.rmtree(out, ignore_errors=True)
    start, cpu = time.perf_counter(), time.process_time()
    report = run_pipeline([video], out, engine, config)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    if report.exit_code != 0:
        raise RuntimeError(f"pipeline failed: {report.sources}")
    return wall, cpu, report.frames, report.engine_seconds / report.seconds


def speed(engine: CoSalEngine, video: Path, runs: int, scratch: Path) -> list[dict[str, object]]:
    rows = []
    for mode in ("global", "streaming"):
        config = PipelineConfig(mode=mode, window=8, consensus_frames=32)
        engine_alone(engine, video, config)  # warm-up
        alone, end_to_end, alone_cpu, end_to_end_cpu, shares = [], [], [], [], []
        for _ in range(runs):
            wall, cpu, n = engine_alone(engine, video, config)
            alone.append(n / wall)
            alone_cpu.append(1000 * cpu / n)
            wall, cpu, n, share = pipeline_run(engine, video, config, scratch)
            shares.append(share)
            end_to_end.append(n / wall)
            end_to_end_cpu.append(1000 * cpu / n)
        e, p = statistics.median(alone), statistics.median(end_to_end)
        ec, pc = statistics.median(alone_cpu), statistics.median(end_to_end_cpu)
        rows.append({"mode": mode, "frames": n, "engine_fps": e, "e2e_fps": p, "ratio": p / e,
                     "engine_runs": alone, "e2e_runs": end_to_end, "engine_cpu_ms": ec, "e2e_cpu_ms": pc,
                     "engine_share": statistics.median(shares)})
        print(rows[-1], flush=True)
    return rows


def overhead(engine: CoSalEngine, video: Path) -> dict[str, float]:
    """CPU ms per frame of the pipeline's work besides the engine, each step timed on its own:
    decoding, resizing for the engine, and the results (full-size map by the engine's upsampling, mask, RLE row,
    overlay)."""
    cpu = time.process_time()
    with open_source(video) as source:
        frames = list(source)
    decode = time.process_time() - cpu
    size = engine.size_for(f.image.shape for f in frames)
    cpu = time.process_time()
    x = torch.stack([engine.prepare(f.image, size) for f in frames])
    prepare = time.process_time() - cpu
    maps = engine.segment(x[:8]).maps
    cpu = time.process_time()
    masks = []
    for i, f in enumerate(frames):
        prob = engine.upsample(maps[i % 8], f.image)
        result = FrameResult.from_prob(source="v", group="g", window=0, frame_index=f.index, timestamp=f.timestamp,
                                       prob=prob, similarity=0.0, model_name="m", model_version="v")
        result.to_row("run")
        masks.append(result.mask)
    results = time.process_time() - cpu
    cpu = time.process_time()
    for f, mask in zip(frames, masks):
        highlight(f.image, mask)
    overlay = time.process_time() - cpu
    n = len(frames)
    return {"decode": 1000 * decode / n, "prepare": 1000 * prepare / n, "results": 1000 * results / n,
            "overlay_draw": 1000 * overlay / n}


def memory(engine: CoSalEngine, n_frames: int, scratch: Path) -> dict[str, float]:
    """RSS after every window over a long video of 160x96 frames; growth fitted after warm-up."""
    frames = load_frames(DAVIS_IMAGES / "goat", size=(160, 96))
    video = scratch / "long.mp4"
    encode_video([frames[i % len(frames)] for i in range(n_frames)], video, fps=25)
    samples: list[tuple[int, float]] = []
    segment, done = engine.segment, [0]

    def measured(x: torch.Tensor, consensus: torch.Tensor | None = None, prototype_prior=None):  # type: ignore[no-untyped-def]
        prediction = segment(x, consensus, prototype_prior)
        done[0] += x.shape[0]
        samples.append((done[0], rss_mb()))
        return prediction

    engine.segment = measured  # type: ignore[method-assign]
    try:
        config = PipelineConfig(mode="streaming", window=8, overlay=True)
        start = time.perf_counter()
        report = run_pipeline([video], scratch / "mem", engine, config)
        seconds = time.perf_counter() - start
    finally:
        del engine.segment
    counts = np.array([s[0] for s in samples], float)
    rss = np.array([s[1] for s in samples])
    warm = counts >= counts[-1] * 0.2
    slope, _ = np.polyfit(counts[warm], rss[warm], 1)  # MiB per frame
    result = {"frames": report.frames, "seconds": seconds, "rss_start": float(rss[0]),
              "rss_after_warmup": float(rss[warm][0]), "rss_end": float(rss[-1]), "rss_max": float(rss.max()),
              "slope_mb_per_1000": float(slope * 1000), "extrapolated_20000": float(slope * 20000)}
    print(result, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="checkpoint (default: the embedded model)")
    parser.add_argument("--frames", type=int, default=64,
                        help="frames of the 480p video (DAVIS goat's 90, played again from the start beyond them)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--memory-frames", type=int, default=3000)
    parser.add_argument("--memory-input-size", type=int, default=MIN_INPUT_SIZE,
                        help="the smallest input the engine accepts, so that the run is short")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (two on two shared, loaded cores made every call about 3x slower here)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # after the imports: tests' conftest (via video_fixtures) sets its own
    kept = keep_freed_memory()  # as the CLI, jobs and flows do

    def build(**kwargs: object) -> CoSalEngine:
        return CoSalEngine.from_checkpoint(args.weights, **kwargs) if args.weights else CoSalEngine.from_pretrained(**kwargs)

    scratch = Path(tempfile.mkdtemp(prefix="bench-video-"))
    try:
        video = scratch / "davis480p.mp4"
        frames = load_frames(DAVIS_IMAGES / "goat")  # 854x480, 90 frames: longer videos play it again
        encode_video([frames[i % len(frames)] for i in range(args.frames)], video, fps=24)
        start = startup(args.weights, args.threads)
        engine = build()
        load_before = os.getloadavg()
        rows = speed(engine, video, args.runs, scratch)
        steps = overhead(engine, video)
        load_after = os.getloadavg()
        mem = memory(build(input_size=args.memory_input_size), args.memory_frames, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    lines = [
        "# Video pipeline on the CPU: end to end against the engine alone, and memory",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, precision {engine.precision} (auto), allocator keeping freed memory "
        f"(as the CLI): {'yes' if kept else 'no'}. Model: {engine.name} {engine.version} at {engine.size_for([(480, 854)])} px"
        f"{' (' + str(args.weights.name) + ')' if args.weights else ''}.",
        f"Load average before/after the speed runs: {load_before[0]:.1f} / {load_after[0]:.1f} "
        "(the machine is shared; medians of alternating runs).",
        "",
        f"## Speed: {args.frames} frames of DAVIS 'goat' (90 frames, looped), 854x480 H.264, window 8, {args.runs} runs each",
        "",
        "| mode | engine alone: frames/s, median (best) | end to end: frames/s, median (best) | end to end / engine | "
        "CPU ms per frame: engine alone | end to end | engine / end to end (CPU) | engine calls' share of the end-to-end wall time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['engine_fps']:.2f} ({max(r['engine_runs']):.2f}) | "
                     f"{r['e2e_fps']:.2f} ({max(r['e2e_runs']):.2f}) | {r['ratio']:.0%} | "
                     f"{r['engine_cpu_ms']:.0f} | {r['e2e_cpu_ms']:.0f} | {r['engine_cpu_ms'] / r['e2e_cpu_ms']:.0%} | "
                     f"{r['engine_share']:.0%} |")
    lines += [
        "",
        f"Start-up of a fresh process (not in the frames/s above): import {start['import']:.1f} s, model load "
        f"{start['load']:.1f} s, first batch of 8 {start['first_batch']:.1f} s.",
        "",
        "CPU ms per frame of the other steps, each timed alone (single thread): "
        + ", ".join(f"{k} {v:.1f}" for k, v in steps.items())
        + f"; together {sum(steps.values()):.1f} ms against the engine's {rows[0]['engine_cpu_ms']:.0f} ms "
        "(global). Decoding and resizing run in the decode-ahead thread; results and overlays in the sink "
        "thread, beside the engine's next window (the overlay's H.264 encoding is not included here).",
        "",
        "Engine alone: the same engine calls on frames decoded and resized beforehand (global: a "
        "classifier pass over the 32 consensus frames, then `segment` per window; streaming: `segment` per "
        "window, its backbone pass also giving the new frames' logits for the running consensus). End to end: `run_pipeline` on the file "
        "(decode ahead in a thread, resize, engine, maps upsampled to 854x480 and masks, RLE, Parquet, events). "
        "CPU ms per frame: process CPU time (all threads) per frame; it is far less disturbed by the other "
        "jobs on this machine than wall time, and its ratio is the share of the work that is the engine's.",
        "",
        f"## Memory: {mem['frames']} frames (160x96, streaming, window 8, overlay on) at "
        f"{args.memory_input_size} px input",
        "",
        "| RSS at start | after 20% (warm-up) | at end | max | growth per 1000 frames | extrapolated to 20,000 frames |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {mem['rss_start']:.0f} MiB | {mem['rss_after_warmup']:.0f} MiB | {mem['rss_end']:.0f} MiB | "
        f"{mem['rss_max']:.0f} MiB | {mem['slope_mb_per_1000']:+.2f} MiB | {mem['extrapolated_20000']:+.1f} MiB |",
        "",
        f"Growth is the least-squares slope of RSS over frames after the first 20% ({mem['seconds']:.0f} s run), "
        "times 20,000. A smaller input size and small frames make the run short enough here; what the "
        "pipeline keeps per frame does not depend on either (the event series: 24 bytes per frame; "
        "Parquet rows are flushed every 256 frames or 10 s).",
    ]
    write_results("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
