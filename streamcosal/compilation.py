"""``torch.compile`` for inference: the backbone's features and the decoder, where the convolutions are.

Opt-in (``CoSalEngine(compile=True)``, ``--compile``): inductor with the weights frozen, so they are
cast to the precision that runs and laid out for oneDNN once, and each convolution is fused with the
activation after it. On a Zen4 (native bf16), groups of 8 at 224 (README, Speed;
benchmarks/results/engine_cpu_zen4*.md): the default model in bf16 81.5 -> 89.7 frames/s on 2 threads
(+10%), in fp32 20.1 -> 24.1 on one (on two, in that run, 45.1 -> 40.8); GICD-VGG16 in fp32 +28%, in
bf16 +0.5%. A shape compiled in 9-11 s there (about 25 s with inductor's cache cold). GIM (autograd
through the classifier head), the consensus head and the object-prototype gate stay eager: they are
small, and GIM takes a gradient.

Each new group shape (images per group, input size) compiles anew, so it pays on videos and long
runs (a window shape repeats), not on a few photo groups of different sizes. Past
``torch._dynamo.config.recompile_limit`` shapes (8), new shapes run eagerly. Shapes are static: with a
dynamic batch or size, freezing failed to trace timm's same-padding (a branch on the input size).
"""

from __future__ import annotations

import contextlib

import torch
import torch._inductor.config

from .model import GICD


def compile_for_inference(model: GICD) -> None:
    """Compile ``model.backbone.features`` and ``model.decoder`` in place, one graph per input shape
    (lazily: a shape compiles when it first runs, inside :func:`frozen`). Raises what ``torch.compile``
    raises where it is unavailable."""
    backbone, decoder = model.backbone, model.decoder
    backbone.features = torch.compile(backbone.features, dynamic=False)  # type: ignore[method-assign]
    decoder.forward = torch.compile(decoder.forward, dynamic=False)  # type: ignore[method-assign]


def frozen() -> contextlib.AbstractContextManager[object]:
    """The inductor settings compiled calls run under: weights frozen (constants, cast and pre-packed
    once; that is the speed-up). Read when a shape compiles; ``torch.compile(options=...)`` did not
    reach it in torch 2.14 (same maps and speed as without), so the engine's calls set it."""
    return torch._inductor.config.patch(freezing=True)


def uncompile(model: GICD) -> None:
    """Undo :func:`compile_for_inference`: the modules' own methods again."""
    for module, name in ((model.backbone, "features"), (model.decoder, "forward")):
        module.__dict__.pop(name, None)
