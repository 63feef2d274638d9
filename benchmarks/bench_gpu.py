"""The engine on a CUDA GPU: frames/s and peak memory by model, precision and group size.

GICD-VGG16 (torchvision's weights from the hub cache, random otherwise: speed does not depend on
the values) and the shipped default (``CoSalEngine.from_pretrained()``), fp32/bf16/fp16, groups of 8/32/64 at
224 (a group is one batch: ``chunk_size`` = the group), plus the per-image reference of the
authors' inference for VGG-16 in the same process. Frames already on the GPU's host side,
prepared; timings are best of ``--runs`` after a warm-up, with the GPU synchronised. Writes a
Markdown table; ``benchmarks/gpu.sh`` runs it after the GPU tests.

    python benchmarks/bench_gpu.py --out benchmarks/results/engine_gpu.md
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_engine import default_title, group_of_8, vgg16_gicd  # noqa: E402
from benchmarks.reference_gicd import ReferenceGICD, official_backbone_as_torchvision  # noqa: E402
from benchmarks.results_file import write_results  # noqa: E402
from streamcosal.inference.engine import CoSalEngine
from streamcosal.model import GICD  # noqa: E402

GROUPS = (8, 32, 64)
PRECISIONS = ("fp32", "bf16", "fp16")


def best_seconds(fn: Callable[[], object], runs: int) -> float:
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--groups", type=int, nargs="+", default=list(GROUPS))
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA GPU")
    warnings.simplefilter("ignore")
    vgg, vgg_weights = vgg16_gicd()
    default = CoSalEngine.from_pretrained(device="cpu")
    lite: GICD = default.model
    eight = group_of_8(CoSalEngine(lite, device="cpu", precision="fp32"))
    rows = []

    gicd_state = {f"backbone.{k}": v for k, v in vgg.backbone.state_dict().items()} | vgg.decoder.state_dict()
    reference = ReferenceGICD({k: v.cuda() for k, v in gicd_state.items()},
                              official_backbone_as_torchvision(gicd_state))
    reference.classifier_net.cuda()
    reference.backbone.cuda()
    xn = CoSalEngine(vgg, device="cuda", precision="fp32").normalise(eight).contiguous()
    t_ref = best_seconds(lambda: reference(xn), args.runs)
    rows.append(f"| GICD-VGG16 | authors' reference (batch 1) | fp32 | 8 | {8 / t_ref:.0f} | | 1x |")

    for title, model in (("GICD-VGG16", vgg), (default_title(default), lite)):
        for precision in args.precisions:
            for n in args.groups:
                engine = CoSalEngine(model, device="cuda", precision=precision, chunk_size=n)  # type: ignore[arg-type]
                x = eight.repeat((n + 7) // 8, 1, 1, 1)[:n]
                torch.cuda.reset_peak_memory_stats()
                t = best_seconds(lambda: engine.segment(x), args.runs)
                peak = torch.cuda.max_memory_allocated() / 2**20
                ratio = f"{t_ref / t * n / 8:.1f}x" if title == "GICD-VGG16" else ""
                rows.append(f"| {title} | engine | {precision} | {n} | {n / t:.0f} | {peak:.0f} | {ratio} |")
                print(rows[-1], flush=True)
        model.cpu()

    lines = [
        "# The engine on a GPU",
        "",
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}; "
        f"`CoSalEngine.segment` on groups of real photos at 224 (frames on the host, as the pipeline gives "
        f"them), best of {args.runs} runs after a warm-up. VGG-16: {vgg_weights}. Peak memory: "
        "`torch.cuda.max_memory_allocated` during the runs. No CUDA graphs or torch.compile.",
        "",
        "| model | path | precision | group | frames/s | peak MiB | against the reference |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        "Made with `benchmarks/gpu.sh` (`python benchmarks/bench_gpu.py --out benchmarks/results/engine_gpu.md`).",
    ]
    write_results("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
