"""Which device runs the engine."""

from __future__ import annotations

import torch


def resolve_device(device: str) -> torch.device:
    """"auto" is CUDA when present, else the CPU; "cpu", "cuda" and "cuda:N" as asked, where they exist.
    Anything else (a name torch does not know, or another of its devices: mps, xpu, meta) is a ValueError
    that says what to use."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda (cuda:N for one GPU)") from e
    if dev.type not in ("cpu", "cuda"):  # mps, xpu, meta, ...: torch knows them, the engine is built for these two
        raise ValueError(f"device {device!r} is not supported: streamcosal runs on the CPU or a CUDA GPU; use auto, "
                         "cpu or cuda (cuda:N for one GPU)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but no CUDA GPU is available here: use auto or cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= (count := torch.cuda.device_count()):
        raise ValueError(f"device {device!r} was asked for but this machine has {count} CUDA GPU(s): use cuda:0 to "
                         f"cuda:{count - 1}, cuda or auto")
    return dev
