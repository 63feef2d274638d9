"""The C library's allocator for a process that runs the engine: keep freed memory for reuse.

glibc serves allocations over its mmap threshold (at most 32 MiB) with fresh mappings and unmaps
them when freed, and trims the heap's free top: every group's large tensors are then faulted in
again, page by page, and zeroed by the kernel. Keeping freed memory (``mallopt``: no mmap for
allocations, no trimming) lets the next group reuse the same pages. Measured (docs/speed.md): the
bundled example end to end on 2 Zen4 cores, fp32 17.6 -> 21.7-22.3 frames/s, bf16 29.4-30.6 ->
32.2-33.0; GICD-VGG16 fp32 on one core 2.08 -> 3.79 frames/s. The price: the process keeps its peak
memory (about 70 MiB more for the default model in groups of 8 at 288).

:meth:`streamcosal.params.EngineSpec.build` (the CLI, jobs and flows) calls it before loading each
engine (the setting is process-wide, and setting it again changes nothing); a library user of
:class:`streamcosal.inference.engine.CoSalEngine` may call it too.
"""

from __future__ import annotations

import ctypes
import os

ENVIRONMENT = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")
"""glibc's own settings of the same: where either is set, the process's owner has chosen."""
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters


def keep_freed_memory() -> bool:
    """Set glibc's allocator to keep freed memory (``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``
    from within the process); True when it did. False, changing nothing, where the C library is not
    glibc or either variable is set in the environment."""
    if any(name in os.environ for name in ENVIRONMENT):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
