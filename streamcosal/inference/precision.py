"""Numeric precision for inference and training: one name per choice, one rule for ``"auto"``.

``"auto"`` picks what is fast and exact enough on the hardware at hand: bf16 on a CPU with native
bf16 (AMX or AVX512-BF16), fp32 on a CPU without it (there oneDNN emulates bf16, about 9x slower
than fp32), bf16 on a GPU that supports it and fp16 on one that does not. Consensus, GIM and
normalisations stay fp32 whatever is chosen (see :mod:`streamcosal.model.gim`).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Literal, get_args

import torch

from streamcosal.params import Precision

ResolvedPrecision = Literal["fp32", "bf16", "fp16"]
"""What actually runs."""
PRECISIONS: tuple[str, ...] = get_args(Precision)


def cpu_has_native_bf16() -> bool:
    """True on CPUs with AVX512-BF16 or AMX, where bf16 convolutions beat fp32."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: torch.device) -> ResolvedPrecision:
    """The precision that runs on ``device`` for the requested one; clear errors for impossible ones.

    ``auto``: bf16 on CPUs with native bf16, else fp32; bf16 on CUDA GPUs that support it, else fp16.
    ``fp16`` on a CPU is an error; ``bf16`` on a CPU without native bf16 runs (emulated) with a warning.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
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
        return "this GPU supports bf16" if torch.cuda.is_bf16_supported() else "this GPU has no bf16"
    return "this CPU has native bf16" if cpu_has_native_bf16() else "this CPU has no native bf16"


def autocast(precision: ResolvedPrecision, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The autocast context for a resolved precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
