"""``torch.compile`` for inference: the backbone's features, and everything after them.

Opt-in (``CoSalEngine(compile=True)``, ``--compile``): inductor with the weights frozen, so they are
cast to the precision that runs and laid out for oneDNN once, each convolution is fused with the
activation or sum after it, and the small work between them (GIM's closed-form gradients, the CAM,
the decoder's gating and upsampling, the object-prototype gate) is fused into a few loops. Two graphs
(:func:`compiled_methods`): the features, then :meth:`GICD.decode`, because a streaming window's
running consensus is made in Python from the logits of its own features, between them. On a Zen4
(native bf16), groups of 8 at 224 (docs/speed.md; benchmarks/results/engine_cpu_zen4*.md): the default
model in bf16 +15-23% on 2 threads (84.5 -> 104.0 frames/s at a quiet moment; 75.6-78.8 -> 89.0-92.4
in three busier runs, before streamcosal.inference.samepad).
One graph for the whole forward measured the same (94.9 against 94.7 frames/s, the best of 30 calls
in three alternating runs). A shape compiled in 10-17 s there (about 25 s with inductor's cache cold).
The first call of each pass and shape is timed and logged (``torch.compile: the first decode pass of
4x3x288x288 took 14.1 s``), so that a run states what compiling cost it.

Each new group shape (images per group, input size) compiles anew, and so does each way of calling
(with or without a consensus given, a prototype prior, the mirrored pass of ``flip``), so it pays on
videos and long runs (a window shape repeats), not on a few photo groups of different sizes. Past
``torch._dynamo.config.recompile_limit`` graphs (8) of one method, new ones run eagerly. Shapes are
static: with a dynamic batch or size, freezing failed to trace timm's same-padding (a branch on the
input size).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
from typing import Callable, TypeVar

import torch
import torch._inductor.config
from torch import nn

from streamcosal.model import GICD

T = TypeVar("T")
logger = logging.getLogger(__name__)


def compiled_methods(model: GICD) -> list[tuple[nn.Module, str]]:
    """What runs compiled: the backbone's features, everything after them (:meth:`GICD.decode`), and
    the consensus logits (from F5, or a pass of their own for groups larger than a chunk)."""
    return [(model.backbone, "features"), (model, "decode"), (model, "consensus_logits")]


def compile_for_inference(model: GICD) -> None:
    """Compile :func:`compiled_methods` in place, one graph per input shape and way of calling (lazily: a
    graph compiles when it first runs, inside :func:`frozen`). Raises what ``torch.compile`` raises
    where it is unavailable."""
    for module, name in compiled_methods(model):
        setattr(module, name, torch.compile(getattr(module, name), dynamic=False))


def frozen() -> contextlib.AbstractContextManager[object]:
    """The inductor settings compiled calls run under: weights frozen (constants, cast and pre-packed
    once; that is the speed-up). Read when a shape compiles; ``torch.compile(options=...)`` did not
    reach it in torch 2.14 (same maps and speed as without), so the engine's calls set it."""
    return torch._inductor.config.patch(freezing=True)


def uncompile(model: GICD) -> None:
    """Undo :func:`compile_for_inference`: the modules' own methods again."""
    for module, name in compiled_methods(model):
        module.__dict__.pop(name, None)


class CompileGuard:
    """Runs the passes of a GICD network, compiled when asked (:func:`compile_for_inference`) and where
    it works: when compiling fails (no C++ compiler, an operator inductor cannot lower, torch.compile
    unavailable on this platform or Python), the pass runs again uncompiled, and every pass after it,
    after a warning naming the reason. The same maps either way."""

    def __init__(self, model: GICD, compile: bool) -> None:
        self.model = model
        self._passes = threading.RLock()  # threads sharing an engine (an archive's units) take turns: torch.func's
        # forward-AD levels are process-wide, and two passes at once fail ("... a forward AD level with an invalid index")
        self.compiled = False
        """Whether the network runs compiled now (False again after compiling failed)."""
        self._timed: set[tuple[str, tuple[int, ...]]] = set()  # (pass, input shape): first call logged
        if compile:
            try:
                compile_for_inference(model)
                self.compiled = True
            except Exception as error:  # torch.compile unavailable on this platform or Python
                self._failed(error)

    def run(self, call: Callable[[], T], name: str = "", shape: tuple[int, ...] = ()) -> T:
        """call() (a pass of the network), under :func:`frozen` when compiled; one pass at a time. ``name`` and
        ``shape`` (the pass and its input's [N,3,S,S]) name it: compiled, the first call of each is timed and
        logged, as it is the one that compiles."""
        with self._passes:
            if not self.compiled:
                return call()
            start = time.perf_counter()
            try:
                with frozen():
                    out = call()
            except torch._dynamo.exc.TorchDynamoException as error:
                if (short := out_of_memory(error)) is not None:  # not the compiler's failure: the chunk's size
                    raise short from None
                self._failed(error)
                return call()
            if name and (name, shape) not in self._timed:
                self._timed.add((name, shape))
                logger.info("torch.compile: the first %s pass of %s took %.1f s (compiling; once for each input "
                            "shape)", name, "x".join(map(str, shape)), time.perf_counter() - start)
            return out

    def _failed(self, error: Exception) -> None:
        """Run uncompiled from now on, and warn with the reason (the error's first line)."""
        uncompile(self.model)
        self.compiled = False
        text = str(error).strip()
        reason = f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
        warnings.warn(f"torch.compile is unavailable or failed here ({reason}); running uncompiled: the same maps, "
                      "at the uncompiled speed (leave out --compile to skip trying)", RuntimeWarning, stacklevel=4)


def out_of_memory(error: BaseException) -> torch.OutOfMemoryError | None:
    """The GPU's out-of-memory error that made compiling fail (inductor wraps it, e.g. while it folds the
    frozen weights), or None where the compiler failed for another reason."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, torch.OutOfMemoryError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or getattr(cause, "inner_exception", None)
    return None
