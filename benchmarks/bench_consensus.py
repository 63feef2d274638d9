"""What GIM's shared-regions embedding consensus (model/cooccurrence.py) costs the default engine.

The default engine (``CoSalEngine.from_pretrained()``, precision auto) segments groups of real DAVIS
frames with the shared-regions consensus and with the plain mean embedding it replaced (patched in
for the comparison), interleaved, best of ``--runs`` after a warm-up, ``--threads`` torch threads.

    python benchmarks/bench_consensus.py --threads 2 --runs 5 --out benchmarks/results/consensus_cpu_zen4.md
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

import streamcosal.model.gim as gim
from streamcosal import CoSalEngine
from streamcosal.io.imagefile import read_image
from streamcosal.markdown import table

DATA = Path(os.environ.get("STREAMCOSAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CASES = ((8, 224), (32, 288))  # (frames, input size): a photo group; a video's chunk at the default's largest size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    engine = CoSalEngine.from_pretrained(device="cpu")
    frames = [read_image(p)[0] for p in sorted((DATA / "davis2016" / "images" / "breakdance").glob("*.jpg"))]
    shared = gim.common_region_embedding
    consensuses = {"shared regions": shared, "plain mean": lambda head: head.embedding.mean(0, keepdim=True)}
    rows = []
    for n, size in CASES:
        x = torch.stack([engine.prepare(frame, size) for frame in frames[:n]])
        best = {name: float("inf") for name in consensuses}
        for _ in range(args.runs + 1):  # the first round warms up; interleaved so that load hits both alike
            for name, function in consensuses.items():
                gim.common_region_embedding = function
                start = time.perf_counter()
                engine.segment(x)
                best[name] = min(best[name], time.perf_counter() - start)
        gim.common_region_embedding = shared
        for name, seconds in best.items():
            rows.append([f"{n} frames at {size} px", name, f"{1000 * seconds:.0f}", f"{n / seconds:.1f}",
                         f"{best['plain mean'] / seconds:.2f}x"])
    text = (f"The default engine ({engine.describe().splitlines()[0]}), {platform.machine()}, "
            f"{os.cpu_count()} cores, {args.threads} torch thread(s), precision {engine.precision}, torch {torch.__version__}, "
            f"best of {args.runs} after a warm-up, measured {date.today()} (breakdance frames, 854x480). "
            f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f}.\n\n"
            + "\n".join(table(["group", "embedding consensus", "ms per group", "frames/s", "speed against the plain mean"],
                              rows)) + "\n")
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
