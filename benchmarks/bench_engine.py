"""Engine speed against a faithful reference of the authors' inference, and against this machine.

Same process, same group of 8 real photos at 224: GICD-VGG16 through the reference (per image:
consensus pass, backbone pass, full .backward(), decoder; batch 1) and through the engine (one
batch, one backbone pass, GIM's gradient through the head only), then the default
engine (``CoSalEngine.from_pretrained()``: EfficientNet-Lite2 since 0.1.0+lite2; the committed
tables name the model they measured), with and without its BatchNorms folded (the engine folds them; the
unfolded row is the engine before that change). Each path: best of ``--runs`` after a warm-up.
Each figure also as achieved GFLOP/s (the model's FLOPs per frame, counted by
torch.profiler, times frames/s) and as a share of this machine's measured convolution
throughput (``conv_throughput.py``, same threads, same process). VGG-16 weights: torchvision's
from the hub cache, random otherwise (speed does not depend on the values; exactness is checked
on the same weights). bf16 rows where bf16 is native (or with ``--bf16``: emulated, slow). Then both
models compiled (``compile=True``: torch.compile, weights frozen), with the first call's time. Last,
on glibc, the reference and the uncompiled engines again with malloc keeping freed memory
(``streamcosal.inference.allocator``, what the CLI, jobs and flows do).

    python benchmarks/bench_engine.py --threads 1 --runs 3 --out benchmarks/results/engine_cpu.md
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from skimage import data as skdata
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.conv_throughput import throughput  # noqa: E402
from benchmarks.reference_gicd import ReferenceGICD, official_backbone_as_torchvision  # noqa: E402
from benchmarks.results_file import write_results  # noqa: E402
from streamcosal.inference.allocator import keep_freed_memory  # noqa: E402
from streamcosal.inference.engine import CoSalEngine
from streamcosal.inference.precision import cpu_has_native_bf16, resolve_precision  # noqa: E402
from streamcosal.inference.weights import default_weights_path
from streamcosal.model import GICD, VGG16Backbone, build_backbone, load_checkpoint  # noqa: E402
from streamcosal.model.backbones import vgg16_weight_path  # noqa: E402

SAMPLES = ("chelsea", "coffee", "astronaut", "rocket", "cat", "immunohistochemistry", "hubble_deep_field", "retina")


def group_of_8(engine: CoSalEngine) -> torch.Tensor:
    """8 real photos (scikit-image samples), [8,3,224,224] in [0,1]."""
    images = [np.ascontiguousarray(getattr(skdata, name)()[..., :3]) for name in SAMPLES]
    return torch.stack([engine.prepare(im) for im in images])


def vgg16_gicd() -> tuple[GICD, str]:
    """VGG-16 GICD: torchvision's ImageNet weights from the hub cache, or random ones."""
    if vgg16_weight_path(None).is_file():
        return GICD(build_backbone("vgg16")), "torchvision's weights, random decoder"
    torch.manual_seed(0)
    return GICD(VGG16Backbone()), "random weights (none in the hub cache)"


def default_title(engine: CoSalEngine) -> str:
    """The table title of the default model, e.g. "GICD-Lite2 (default)" for gicd-efficientnet_lite2."""
    return f"GICD-{engine.name.removeprefix('gicd-efficientnet_').title()} (default)"


def unfolded_default_engine() -> CoSalEngine:
    """The default engine as it ran before BatchNorm folding: the same checkpoint, its model as loaded."""
    engine = CoSalEngine.from_pretrained(device="cpu", precision="fp32")
    model, _ = load_checkpoint(default_weights_path())
    engine.model = model.eval().requires_grad_(False).to(memory_format=torch.channels_last)
    return engine


@dataclass
class TimedPath:
    """One timed path: its row's labels and its best wall and CPU seconds per group."""

    model: str
    path: str
    precision: str
    run: Callable[[], object]
    gflop: float
    note: str = ""
    wall: float = float("inf")
    cpu: float = float("inf")


def time_interleaved(paths: list[TimedPath], runs: int) -> None:
    """Each path once as a warm-up, then ``runs`` rounds of every path in turn, keeping each path's
    best wall time and best CPU time (process time: on one thread, the time the work had a core)."""
    for p in paths:
        p.run()
    for _ in range(runs):
        for p in paths:
            wall, cpu = time.perf_counter(), time.process_time()
            p.run()
            p.wall = min(p.wall, time.perf_counter() - wall)
            p.cpu = min(p.cpu, time.process_time() - cpu)


def gflop_per_frame(engine: CoSalEngine, x: torch.Tensor) -> float:
    """FLOPs of one ``segment`` call per frame, as torch.profiler counts them (convolutions and
    matrix products: the model's arithmetic), in GFLOP."""
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        engine.segment(x)
    return sum(e.flops for e in prof.key_averages()) / x.shape[0] / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bf16", action="store_true", help="bf16 rows even where bf16 is emulated")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    conv = throughput("cpu")
    peak = {p: max(v for k, v in conv.items() if k.startswith(p)) for p in ("fp32", "bf16") if any(k.startswith(p) for k in conv)}
    precisions = ["fp32"] + (["bf16"] if cpu_has_native_bf16() or args.bf16 else [])

    vgg, vgg_weights = vgg16_gicd()
    fp32 = CoSalEngine(vgg, device="cpu", precision="fp32")
    x = group_of_8(fp32)
    gicd_state = {f"backbone.{k}": v for k, v in vgg.backbone.state_dict().items()} | vgg.decoder.state_dict()
    reference = ReferenceGICD(gicd_state, official_backbone_as_torchvision(gicd_state))
    xn = fp32.normalise(x).contiguous()
    ref_maps = reference(xn)[:, 0].numpy()
    vgg_gflop = gflop_per_frame(fp32, x)
    ref = TimedPath("GICD-VGG16", "authors' reference, batch 1", "fp32", lambda: reference(xn), vgg_gflop, "reference")
    paths = [ref]
    auto = resolve_precision("auto", torch.device("cpu"))
    base = fp32.segment(x).maps
    uncompiled: dict[tuple[str, str], np.ndarray] = {}  # (model, precision) -> the engine's maps, for the compiled rows
    for precision in precisions:
        eng = CoSalEngine(vgg, device="cpu", precision=precision)  # type: ignore[arg-type]
        maps = uncompiled["GICD-VGG16", precision] = eng.segment(x).maps
        note = (f"maps: max abs diff vs reference {np.abs(maps - ref_maps).max():.1e}" if precision == "fp32"
                else f"maps: mean abs diff vs fp32 {np.abs(maps - base).mean():.4f}")
        paths.append(TimedPath("GICD-VGG16", "engine, one batch", precision, lambda eng=eng: eng.segment(x), vgg_gflop, note))

    lite = CoSalEngine.from_pretrained(device="cpu", precision="fp32")
    default = default_title(lite)
    lite_gflop = gflop_per_frame(lite, x)
    before = unfolded_default_engine()
    diff = np.abs(before.segment(x).maps - lite.segment(x).maps)
    paths.append(TimedPath(default, "engine before: BatchNorms not folded", "fp32", lambda: before.segment(x),
                       lite_gflop, f"maps vs folded: mean abs diff {diff.mean():.1e}, max {diff.max():.1e}"))
    for precision in precisions:
        eng = CoSalEngine.from_pretrained(device="cpu", precision=precision)  # type: ignore[arg-type]
        uncompiled[default, precision] = eng.segment(x).maps
        label = f"{precision} (auto)" if precision == auto else precision
        paths.append(TimedPath(default, "engine, one batch", label, lambda eng=eng: eng.segment(x), lite_gflop))
    for precision in precisions:
        label = f"{precision} (auto)" if precision == auto else precision
        for title, build, gflop in (
                ("GICD-VGG16", lambda p: CoSalEngine(copy.deepcopy(vgg), device="cpu", precision=p, compile=True), vgg_gflop),
                (default, lambda p: CoSalEngine.from_pretrained(device="cpu", precision=p, compile=True), lite_gflop)):
            eng = build(precision)  # a copy of VGG-16: compiling patches its modules, which the other engines share
            start = time.perf_counter()
            diff = np.abs(eng.segment(x).maps - uncompiled[title, precision])
            note = (f"first call {time.perf_counter() - start:.0f} s (compiling{'' if eng.compiled else ' FAILED: ran eagerly'}); "
                    f"maps vs uncompiled: mean abs diff {diff.mean():.1e}, max {diff.max():.1e}")
            paths.append(TimedPath(title, "engine, compiled (`compile=True`)", label, lambda eng=eng: eng.segment(x), gflop, note))
    time_interleaved(paths, args.runs)

    kept: list[TimedPath] = []
    if keep_freed_memory():  # last: it cannot be undone in this process
        kept = [TimedPath(p.model, f"{p.path}, malloc keeping freed memory", p.precision, p.run, p.gflop)
                for p in paths if "compiled" not in p.path and "before" not in p.path]
        time_interleaved(kept, args.runs)
        paths += kept

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    header = (f"Group of 8 real photos at 224, CPU ({platform.machine()}, {os.cpu_count()} cores, native bf16: "
              f"{cpu_has_native_bf16()}), {args.threads} thread(s), torch {torch.__version__}, best of {args.runs} rounds "
              f"after a warm-up, paths interleaved, all in one process; frames/s from wall time and from CPU time "
              f"(process time: with one thread, the time the work had a core; steadier than wall time on a shared machine). VGG-16: {vgg_weights}. Load average (1 min) at the start "
              f"{load_before:.1f}; at the end (1/5/15 min) {load}: the machine is shared, so compare rows, not runs.")
    conv_line = ("This machine's measured convolution throughput (`conv_throughput.py`, same threads, same process): "
                 + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in conv.items()) + "; the share below is of the best of them.")
    lines = [header, "", conv_line, "",
             "| model | path | precision | frames/s (wall) | frames/s (CPU time) | against the reference (wall / CPU time) | "
             "GFLOP/frame | GFLOP/s (CPU time) | share of conv throughput | notes |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for p in paths:
        fps, kind = x.shape[0] / p.cpu, p.precision.split()[0]
        base = kept[0] if p in kept else ref  # against the reference in the same allocator setting
        ratio = f"{base.wall / p.wall:.2f}x / {base.cpu / p.cpu:.2f}x" if p.model == "GICD-VGG16" else ""
        share = f"{fps * p.gflop / peak[kind]:.0%}" if kind in peak else ""
        lines.append(f"| {p.model} | {p.path} | {p.precision} | {x.shape[0] / p.wall:.2f} | {fps:.2f} | {ratio} | "
                     f"{p.gflop:.1f} | {fps * p.gflop:.0f} | {share} | {p.note} |")
    write_results("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
