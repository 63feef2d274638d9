"""Segmenting again when the GPU runs out of memory: in chunks half as large, from then on, down to one
image (:func:`in_smaller_chunks`); a running consensus given as a function still adds its window once,
however often the window is segmented (:func:`called_once`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Protocol, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


class Chunked(Protocol):
    """What is segmented in chunks (a :class:`~streamcosal.inference.engine.CoSalEngine`)."""

    chunk_size: int
    device: torch.device


def in_smaller_chunks(engine: Chunked, attempt: Callable[[], T]) -> T:
    """``attempt()``, again with ``engine.chunk_size`` halved (for every later call too, one warning each
    time) while the GPU runs out of memory, down to chunks of one image."""
    while True:
        try:
            return attempt()
        except torch.OutOfMemoryError:
            if engine.chunk_size == 1:
                raise
        smaller = engine.chunk_size // 2
        warnings.warn(f"out of GPU memory at chunks of {engine.chunk_size} images: segmenting in chunks of "
                      f"{smaller} from now on (a smaller --window or --input-size avoids the retries)",
                      RuntimeWarning, stacklevel=4)
        engine.chunk_size = smaller
        if engine.device.type == "cuda":  # after the except block, whose error held the failed pass's tensors
            torch.cuda.empty_cache()


def called_once(consensus: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``consensus`` whose first result is returned again on later calls: a running consensus adds a
    window's frames once, however often the window is segmented."""
    results: list[Tensor] = []

    def once(logits: Tensor) -> Tensor:
        if not results:
            results.append(consensus(logits))
        return results[0]

    return once
