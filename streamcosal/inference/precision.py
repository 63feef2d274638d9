"""Numeric precision for inference and training: one name per choice, one rule for ``"auto"``.

``"auto"`` picks what is fast and exact enough on the hardware at hand: bf16 on a CPU with native
bf16 (AMX or AVX512-BF16), fp32 on a CPU without it (there oneDNN emulates bf16, about 9x slower
than fp32), bf16 on a GPU with native bf16 (Ampere on) and fp16 on one without. Consensus, GIM and
normalisations stay fp32 whatever is chosen (see :mod:`streamcosal.model.gim`).

On a GPU no rule holds: bf16 ran slower than fp32 at groups of 8 on an H200, fp16 fastest at 64
compiled. There the inference engine measures instead (:func:`fastest`, over
:func:`measured_candidates`) at the run's group size, once, and keeps the fastest: every candidate
is at least as exact as bf16, the precision the accuracy tables are measured at.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

import torch

from streamcosal.params import Precision

ResolvedPrecision = Literal["fp32", "bf16", "fp16"]
"""What actually runs."""
PRECISIONS: tuple[str, ...] = get_args(Precision)
logger = logging.getLogger(__name__)


def cpu_has_native_bf16() -> bool:
    """True on CPUs with AVX512-BF16 or AMX, where bf16 convolutions beat fp32."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def gpu_has_native_bf16(device: torch.device) -> bool:
    """True on CUDA GPUs of compute capability 8 or later (Ampere on), which run bf16 natively; torch's
    ``is_bf16_supported()`` also says True where bf16 is emulated (T4, V100), and of the current GPU."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_precision(precision: str, device: torch.device) -> ResolvedPrecision:
    """The precision that runs on ``device`` for the requested one; clear errors for impossible ones.

    ``auto``: bf16 on CPUs with native bf16, else fp32; bf16 on CUDA GPUs that support it, else fp16.
    ``fp16`` on a CPU is an error; ``bf16`` on a CPU without native bf16 runs (emulated) with a warning.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if gpu_has_native_bf16(device) else "fp16"
        if device.type == "cpu" and cpu_has_native_bf16():
            return "bf16"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 runs on GPUs only; on the CPU use precision 'auto', 'fp32' or 'bf16' "
                         "(bf16 is fast only on CPUs with AVX512-BF16/AMX)")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn("this CPU has no native bf16 (no AVX512-BF16 or AMX): bf16 is emulated and slower "
                      "than fp32 here; use precision 'auto' or 'fp32'", stacklevel=3)
    return precision  # type: ignore[return-value]


def auto_reason(device: torch.device) -> str:
    """Why ``auto`` chose what it chose on ``device``, in a few words."""
    if device.type == "cuda":
        return "this GPU has native bf16" if gpu_has_native_bf16(device) else "this GPU has no native bf16"
    return "this CPU has native bf16" if cpu_has_native_bf16() else "this CPU has no native bf16"


def autocast(precision: ResolvedPrecision, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The autocast context for a resolved precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def measured_candidates(device: torch.device) -> tuple[ResolvedPrecision, ...]:
    """What :func:`fastest` tries on ``device``: fp16, bf16 (where supported) and fp32 on a GPU; fp32 and
    bf16 (only where native) on a CPU."""
    if device.type == "cuda":
        return ("fp16", "bf16", "fp32") if gpu_has_native_bf16(device) else ("fp16", "fp32")
    return ("bf16", "fp32") if device.type == "cpu" and cpu_has_native_bf16() else ("fp32",)


def fastest(run: Callable[[str], object], candidates: tuple[ResolvedPrecision, ...],
            device: torch.device, repeats: int = 3) -> tuple[ResolvedPrecision, dict[str, float]]:
    """The candidate whose ``run`` takes least time on ``device`` (the best of ``repeats`` calls after one
    warm-up call, the device synchronised around each), and every candidate's seconds. A candidate that
    runs out of GPU memory is left out; when all do, the last error is raised."""
    seconds: dict[ResolvedPrecision, float] = {}
    failed = ""  # the last out-of-memory message: the error itself would hold its pass's tensors
    for precision in candidates:
        try:
            run(precision)
            best = float("inf")
            for _ in range(repeats):
                _synchronize(device)
                start = time.perf_counter()
                run(precision)
                _synchronize(device)
                best = min(best, time.perf_counter() - start)
            seconds[precision] = best
            continue
        except torch.OutOfMemoryError as oom:
            failed = str(oom)
        if device.type == "cuda":  # after the except block, whose error held the failed pass's tensors
            torch.cuda.empty_cache()
    if not seconds:
        raise torch.OutOfMemoryError(failed)
    return min(seconds, key=seconds.__getitem__), {str(p): s for p, s in seconds.items()}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_fastest(run: Callable[[str], object], device: torch.device,
                    shape: Sequence[int]) -> tuple[ResolvedPrecision, dict[str, float]]:
    """:func:`fastest` of :func:`measured_candidates` for ``run`` (one group, its input of ``shape``,
    [N,3,S,S]), logged with every candidate's time and what measuring cost."""
    start = time.perf_counter()
    choice, seconds = fastest(run, measured_candidates(device), device)
    logger.info("precision %s: the fastest on %s at groups of %s (%s per group; measuring took %.1f s)",
                choice, device, "x".join(map(str, shape)), per_group(seconds), time.perf_counter() - start)
    return choice, seconds


def per_group(seconds: dict[str, float]) -> str:
    return ", ".join(f"{precision} {1000 * s:.1f} ms" for precision, s in seconds.items())


def precision_words(precision: ResolvedPrecision, requested: str, device: torch.device,
                    seconds: dict[str, float] | None, pending: bool) -> str:
    """The precision for a run's first line: what runs and, for ``auto``, why (or that it is measured yet)."""
    if pending:
        return f"auto (the fastest of {', '.join(measured_candidates(device))}, measured on the first group)"
    if seconds:
        return f"{precision} (auto: the fastest measured here, {per_group(seconds)} per group)"
    return f"{precision} (auto: {auto_reason(device)})" if requested == "auto" else precision
