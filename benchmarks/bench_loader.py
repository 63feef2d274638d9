"""The training data loader's own rate: images/s of augmented batches, by worker processes.

A GPU trains the default decoder at 500-700 images/s (an H200, groups of 16 at 288); one CPU core
makes about 160 images/s of batches at 224. This measures the loader alone (no model) for a config
with 0 workers (the batches made in the measuring process) and with each worker count asked, so
the workers a GPU machine needs can be read from a table made on any machine.

    python benchmarks/bench_loader.py configs/lite2_cp.toml configs/lite2_ms.toml --out benchmarks/results/loader_cpu.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from results_file import write_results

from streamcosal.model import build_backbone
from streamcosal.training.config import load_config
from streamcosal.training.jigsaw import GroupSampler
from streamcosal.training.loader import run_batches
from streamcosal.training.loop import training_groups


def images_per_s(sampler: GroupSampler, steps: int, workers: int) -> tuple[float, float]:
    """(images/s after the first batch, seconds to the first batch) over ``steps`` steps of epoch 0."""
    start = time.perf_counter()
    batches = run_batches(sampler, steps, 0, 1, workers)
    x, _ = next(batches)
    first = time.perf_counter()
    images = 0
    for x, _ in batches:
        images += x.shape[0]
    return images / (time.perf_counter() - first), first - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", type=Path, nargs="+", help="training configs (their data, augmentation, group size)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to measure besides 0")
    parser.add_argument("--steps", type=int, default=60, help="batches per measurement")
    parser.add_argument("--out", type=Path, help="write the Markdown table here too")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rows = []
    for path in args.configs:
        config = load_config(path)
        groups, extra, _ = training_groups(config, build_backbone(config.model.backbone))
        sampler = GroupSampler(groups, size=config.model.input_size, max_images=config.train.max_images,
                               augment=config.augment, seed=config.train.seed, extra=extra)
        images_per_s(sampler, 8, 0)  # the files into the page cache
        sizes = ", ".join(map(str, config.augment.sizes)) or str(config.model.input_size)
        for workers in [0, *args.workers]:
            rate, first = images_per_s(sampler, args.steps, workers)
            rows.append(f"| `{path.name}` | {config.train.max_images} | {sizes} | {workers} | {rate:.1f} | {first:.2f} |")
            print(rows[-1], flush=True)
    text = ("# The training loader's own rate\n\n"
            f"Augmented batches of each config (its data, augmentation and group size), {args.steps} steps of "
            "epoch 0, no model; the files in the page cache; one thread a process; "
            f"{os.cpu_count()} cores ({platform.machine()}); torch {torch.__version__}; "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n\n"
            "| config | images a group | sizes | worker processes | images/s | seconds to the first batch |\n"
            "|---|---:|---|---:|---:|---:|\n" + "\n".join(rows) + "\n")
    write_results(text, args.out)


if __name__ == "__main__":
    main()
