"""Engine speed against a faithful reference of the authors' inference.

Same process, same group of 8 images at 224, VGG-16 GICD on the CPU: the reference (per image:
consensus pass, backbone pass, full .backward(), decoder; batch 1) against the engine (one batch,
one backbone pass, GIM's gradient through the head only) in fp32 and bf16; then the default
EfficientNet-Lite0 engine. Medians over several runs. VGG-16 weights are random (this machine
cannot download torchvision's): speed does not depend on the values, and exactness is checked on
the same random weights. Writes a Markdown table.

    python benchmarks/bench_engine.py --runs 3 --out benchmarks/results/engine_cpu.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from skimage import data as skdata

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.reference_gicd import ReferenceGICD, official_backbone_as_torchvision  # noqa: E402
from benchmarks.results_file import write_results  # noqa: E402
from streamcosal.engine import CoSalEngine  # noqa: E402
from streamcosal.precision import cpu_has_native_bf16  # noqa: E402
from streamcosal.model import GICD, VGG16Backbone, build_backbone  # noqa: E402

SAMPLES = ("chelsea", "coffee", "astronaut", "rocket", "cat", "immunohistochemistry", "hubble_deep_field", "retina")


def group_of_8(engine: CoSalEngine) -> torch.Tensor:
    """8 real photos (scikit-image samples), [8,3,224,224] in [0,1]."""
    images = []
    for name in SAMPLES:
        im = getattr(skdata, name)()
        images.append(np.ascontiguousarray(im[..., :3]))
    return torch.stack([engine.prepare(im) for im in images])


def median_seconds(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    device = torch.device(args.device)

    vgg = GICD(VGG16Backbone())
    gicd_state = {f"backbone.{k}": v for k, v in vgg.backbone.state_dict().items()} | vgg.decoder.state_dict()
    rows: list[tuple[str, str, float, str]] = []
    fp32 = CoSalEngine(vgg, device=args.device, precision="fp32")
    x = group_of_8(fp32)
    n = x.shape[0]

    ref_maps = None
    if device.type == "cpu":
        reference = ReferenceGICD(gicd_state, official_backbone_as_torchvision(gicd_state))
        xn = fp32.normalise(x).contiguous()
        t_ref = median_seconds(lambda: reference(xn), args.runs)
        ref_maps = reference(xn)[:, 0].numpy()
        rows.append(("VGG-16", "authors' reference, fp32, batch 1", n / t_ref, "reference"))
    precisions = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    base = None
    for precision in precisions:
        eng = CoSalEngine(vgg, device=args.device, precision=precision)
        t = median_seconds(lambda: eng.segment(x), args.runs)
        maps = eng.segment(x).maps
        if precision == "fp32":
            base = maps
            note = (f"max abs diff vs reference {np.abs(maps - ref_maps).max():.1e}" if ref_maps is not None else "")
        else:
            note = f"mean abs diff vs fp32 {np.abs(maps - base).mean():.4f}"
        if ref_maps is not None:
            note += f"; {t_ref / t:.2f}x the reference"
        rows.append(("VGG-16", f"engine, {precision}, one batch", n / t, note))
    lite = GICD(build_backbone("efficientnet_lite0"))
    for precision in precisions:
        eng = CoSalEngine(lite, device=args.device, precision=precision)
        t = median_seconds(lambda: eng.segment(x), args.runs)
        rows.append(("EfficientNet-Lite0", f"engine, {precision}, one batch", n / t, ""))

    cpu = platform.processor() or platform.machine()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    header = (f"Group of 8 images at 224, {device.type}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
              f"median of {args.runs} runs. CPU native bf16: {cpu_has_native_bf16()} ({cpu}). "
              f"Load average at the end (1/5/15 min): {load}.")
    lines = [header, "", "| backbone | path | frames/s | notes |", "| --- | --- | ---: | --- |"]
    lines += [f"| {b} | {p} | {fps:.2f} | {note} |" for b, p, fps, note in rows]
    write_results("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
