"""A run's training batches, made ahead in worker processes where the device outpaces one core.

Each batch is a pure function of (seed, epoch, step) (:meth:`GroupSampler.batch`), so batches made
in workers equal those made in the training loop's own thread, and a resumed run gets the same ones.
One step's batch costs a core about 6 ms an image at 224 (163 images/s on an AMD EPYC Zen4, one
thread): a GPU that trains 500+ images/s needs several workers; a CPU run needs none (the workers
would take the cores the training uses).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import cv2
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from streamcosal.training.jigsaw import GroupSampler

MAX_AUTO_WORKERS = 8


def loader_workers(asked: int | None, device: torch.device) -> int:
    """Worker processes for a run: ``asked`` when given; by default none on a CPU and one per core
    but one (at most 8) for a GPU."""
    if asked is not None:
        return asked
    if device.type == "cpu":
        return 0
    return max(0, min(MAX_AUTO_WORKERS, (os.cpu_count() or 1) - 1))


class RunBatches(Dataset[tuple[Tensor, Tensor]]):
    """The batches of epochs ``first`` to ``end - 1``, ``steps`` each, in training order: item ``i`` is
    epoch ``first + i // steps``, step ``i % steps``."""

    def __init__(self, sampler: GroupSampler, steps: int, first: int, end: int) -> None:
        self.sampler, self.steps, self.first, self.end = sampler, steps, first, end

    def __len__(self) -> int:
        return (self.end - self.first) * self.steps

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        epoch, step = self.first + index // self.steps, index % self.steps
        return self.sampler.batch(self.sampler.epoch_groups(epoch, self.steps)[step], epoch, step)


def _one_thread(_: int) -> None:
    """A worker's own work is single-threaded: the parallelism is the workers."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def run_batches(sampler: GroupSampler, steps: int, first: int, end: int, workers: int,
                pin_memory: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
    """Images [N,3,S,S] and masks [N,1,S,S] of every step of epochs ``first`` to ``end - 1`` in order
    (:class:`RunBatches`): made in this thread with ``workers = 0``, else ahead of the loop by
    ``workers`` processes (4 batches each), which keep working through validation between epochs.
    ``pin_memory`` for non-blocking copies to a GPU."""
    batches = RunBatches(sampler, steps, first, end)
    if workers == 0:
        return (batches[i] for i in range(len(batches)))
    # spawned, not forked: a fork taken while another thread holds OpenMP's or OpenCV's pool locks hangs its child
    loader = DataLoader(batches, batch_size=None, shuffle=False, num_workers=workers, pin_memory=pin_memory,
                        prefetch_factor=4, worker_init_fn=_one_thread, multiprocessing_context="spawn")
    return iter(loader)
