"""``streamcosal train --benchmark``: a config's training images/s per precision on this machine."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from streamcosal.inference.precision import ResolvedPrecision, resolve_precision
from streamcosal.training.loader import loader_workers, run_batches
from streamcosal.training.loop import checked_config, model_and_data
from streamcosal.training.step import grad_scaler, train_step


@dataclass
class BenchmarkRow:
    """Training speed of one precision on this machine: images/s over ``steps`` steps of ``group`` images."""

    precision: str
    images_per_s: float
    steps: int
    group: int


def benchmark(config_path: Path, steps: int = 3) -> tuple[list[BenchmarkRow], str]:
    """Training images/s of a config on this machine for each precision it can run, data loading
    included (by the run's loader workers); returns the rows and the precision ``auto`` would train
    in (on a GPU the fastest row, as a run measures it). Writes nothing.

    fp32 and bf16 on a CPU (bf16 is emulated, and slow, without AVX512-BF16/AMX), plus fp16 on a GPU.
    One warm-up step per precision is not timed.
    """
    config, device = checked_config(config_path)
    t = config.train
    model, sampler, _ = model_and_data(config, device)
    workers = loader_workers(t.loader_workers, device)
    rows = []
    candidates: list[ResolvedPrecision] = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    for precision in candidates:
        model.train()
        optimizer = torch.optim.Adam(model.decoder.parameters(), lr=config.optim.lr)
        scaler = grad_scaler(precision, device)
        images, seconds = 0, 0.0
        batches = run_batches(sampler, steps + 1, 0, 1, workers, pin_memory=device.type == "cuda")
        for step in range(steps + 1):
            tic = time.perf_counter()
            x, y = next(batches)
            train_step(model, optimizer, x, y, precision, scaler)
            if device.type == "cuda":  # the step's backward pass and update run on after train_step returns
                torch.cuda.synchronize(device)
            if step > 0:
                seconds += time.perf_counter() - tic
                images += x.shape[0]
        rows.append(BenchmarkRow(precision, images / seconds, steps, t.max_images))
    if t.precision == "auto" and device.type == "cuda":
        return rows, max(rows, key=lambda row: row.images_per_s).precision
    return rows, resolve_precision(t.precision, device)
