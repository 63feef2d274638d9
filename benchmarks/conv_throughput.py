"""This machine's convolution throughput: what the engine's speed is measured against.

GFLOP/s (2 x multiply-adds per second) of the convolutions that dominate GICD, channels_last, a
batch of 8, best of several runs (on the CPU by process time, the time the work had a core): a 256-channel 3x3 convolution at 56x56 (VGG-16's conv3 stage)
and a 64-channel 3x3 convolution at 112x112 (the Lite0 decoder's stride-2 level), in fp32, and in
bf16 where the CPU or GPU has it natively.

    python benchmarks/conv_throughput.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from streamcosal.inference.precision import cpu_has_native_bf16, gpu_has_native_bf16

SHAPES = {"256ch 3x3 at 56x56": (256, 56), "64ch 3x3 at 112x112": (64, 112)}


def conv_gflops(channels: int, size: int, dtype: torch.dtype, device: str = "cpu", batch: int = 8, runs: int = 5) -> float:
    """Best GFLOP/s of a channels x channels 3x3 convolution (padding 1) on [batch, channels, size, size]."""
    x = torch.randn(batch, channels, size, size, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    b = torch.randn(channels, device=device, dtype=dtype)
    flops = 2 * batch * size * size * channels * channels * 9
    clock = time.process_time if device == "cpu" else time.perf_counter  # CPU: the time the work had a core
    best = float("inf")
    for i in range(runs + 1):
        if device != "cpu":
            torch.cuda.synchronize()
        start = clock()
        F.conv2d(x, w, b, padding=1)
        if device != "cpu":
            torch.cuda.synchronize()
        if i:  # the first run is a warm-up
            best = min(best, clock() - start)
    return flops / best / 1e9


def throughput(device: str = "cpu") -> dict[str, float]:
    """{"fp32 256ch 3x3 at 56x56": GFLOP/s, ...}; bf16 entries only where bf16 is native."""
    dtypes = {"fp32": torch.float32}
    if (device == "cpu" and cpu_has_native_bf16()) or (device != "cpu" and gpu_has_native_bf16(torch.device(device))):
        dtypes["bf16"] = torch.bfloat16
    return {f"{name} {shape}": conv_gflops(c, s, dtype, device) for name, dtype in dtypes.items()
            for shape, (c, s) in SHAPES.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name, gflops in throughput(args.device).items():
        print(f"{name}: {gflops:.0f} GFLOP/s ({args.threads} threads)")


if __name__ == "__main__":
    main()
