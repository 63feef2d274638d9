"""One training step, and the precision a run trains in.

``auto`` follows :func:`streamcosal.inference.precision.resolve_precision`'s rule on a CPU (bf16 where
it is native). On a GPU no rule holds: the default's ``train_step`` ran at 552 images/s in bf16 and
730 in fp32 on an H200 (autocast's overhead at small groups), so there ``auto`` measures: the
forward and backward pass of the run's first batch in each of
:func:`~streamcosal.inference.precision.measured_candidates`, the best of 3 after a warm-up, and
trains in the fastest. Measuring leaves no trace (tested), and a resumed run keeps the precision it
started with.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from streamcosal.inference.precision import (
    ResolvedPrecision,
    auto_reason,
    autocast,
    measure_fastest,
    per_group,
    resolve_precision,
)
from streamcosal.model import GICD, gicd_loss


def train_step(model: GICD, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor,
               precision: ResolvedPrecision, scaler: torch.amp.GradScaler) -> float:
    """One step on one group: x [N,3,S,S] in [0,1], y [N,1,S,S] {0,1} (any device: moved to the
    model's). Returns the summed loss; the optimizer steps only when it is finite (and, in fp16,
    when ``scaler`` finds the gradients finite). ``scaler``: see :func:`grad_scaler`."""
    device = model.backbone.pixel_mean.device
    x, y = model.backbone.preprocess(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)
    with autocast(precision, device):
        loss = gicd_loss(model(x).side_maps, y)
    value = loss.item()
    if math.isfinite(value):
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return value


def grad_scaler(precision: ResolvedPrecision, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (its gradients underflow without it); a pass-through otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def fastest_training_precision(model: GICD, x: Tensor, y: Tensor) -> tuple[ResolvedPrecision, dict[str, float]]:
    """The precision whose forward and backward pass of x [N,3,S,S], y [N,1,S,S] is fastest on the model's
    device, and each candidate's seconds. The decoder holds no buffers and draws no random numbers, so
    the passes leave only gradients, which are dropped: the model is as it was."""
    device = model.backbone.pixel_mean.device
    x, y = model.backbone.preprocess(x.to(device)), y.to(device)

    def run(precision: str) -> None:
        with autocast(resolve_precision(precision, device), device):
            loss = gicd_loss(model(x).side_maps, y)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return measure_fastest(run, device, x.shape)


def training_precision(asked: str, device: torch.device, measure: bool | None, started: str | None, model: GICD,
                       first: Callable[[], tuple[Tensor, Tensor]]) -> tuple[ResolvedPrecision, str]:
    """What a run trains in and, in words, why: ``asked`` when it is not ``auto``; ``started`` (a resumed
    run's); else measured on ``first()`` (the run's first batch) when ``measure`` says so (by default on
    a GPU), or the rule."""
    if asked != "auto":
        return resolve_precision(asked, device), asked
    if started is not None:
        return resolve_precision(started, device), f"{started} (auto: as the run started)"
    if measure if measure is not None else device.type == "cuda":
        chosen, seconds = fastest_training_precision(model, *first())
        return chosen, f"{chosen} (auto: the fastest measured here, {per_group(seconds)} a step's pass)"
    chosen = resolve_precision("auto", device)
    return chosen, f"{chosen} (auto: {auto_reason(device)})"
