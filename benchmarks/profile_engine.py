"""Where the engine's time goes: torch.profiler over ``CoSalEngine.segment`` on the CPU.

A group of 8 real photos at 224, fp32 (or ``--precision``), for GICD-VGG16 (torchvision's weights
when they are in torch's hub cache, random otherwise: speed does not depend on the values) and
the shipped default (``CoSalEngine.from_pretrained()``). Two tables per model, from the best of ``--runs``
profiled calls: time by stage of the network (backbone, consensus head, GIM, each decoder level,
the side outputs' upsampling; labels put on by hooks in this script, the model is not changed)
and by operator (self time). Writes Markdown.

    python benchmarks/profile_engine.py --threads 1 --out benchmarks/results/profile_cpu.md
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import platform
import sys
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_engine import default_title, group_of_8, vgg16_gicd  # noqa: E402
from benchmarks.results_file import write_results  # noqa: E402
from streamcosal.inference.engine import CoSalEngine
from streamcosal.inference.precision import cpu_has_native_bf16  # noqa: E402
from streamcosal.model import GICD  # noqa: E402
from streamcosal.model import gicd as gicd_module  # noqa: E402

SEGMENT = "segment (all)"
REST = "rest: the object-prototype gate, upsampling to 224, dtype/layout conversions, engine"


def _labelled(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with record_function(label):
            return fn(*args, **kwargs)
    return wrapper


@contextlib.contextmanager
def stage_labels(model: GICD) -> Iterator[None]:
    """Profiler labels on the network's stages, without changing its code: wrapped methods and
    module hooks, all removed on exit."""
    patched: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, label: str) -> None:
        patched.append((owner, name, owner.__dict__.get(name)))
        setattr(owner, name, _labelled(label, getattr(owner, name)))

    patch(model.backbone, "features", "backbone features F1..F5")
    patch(model.backbone, "head_pass", "GIM: the classifier head's fp32 pass")
    patch(model, "consensus_logits", "consensus: classifier head (its own pass only where it differs)")
    patch(gicd_module, "gradient_induced_weights", "GIM: gradients through the head, weights")
    patch(gicd_module, "class_activation_map", "GIM: CAM")
    handles = []
    modules: list[tuple[str, nn.Module]] = [("decoder top layer", model.decoder.toplayer)]
    for k in (4, 3, 2, 1):
        for part in ("latlayer", "enlayer", "dslayer"):
            modules.append((f"decoder level {k}: {part}", getattr(model.decoder, f"{part}{k}")))
    modules.append(("decoder (all levels)", model.decoder))
    for label, module in modules:
        state: dict[str, Any] = {}

        def pre(_m: nn.Module, _a: Any, state: dict[str, Any] = state, label: str = label) -> None:
            state["ctx"] = record_function(label)
            state["ctx"].__enter__()

        def post(_m: nn.Module, _a: Any, _o: Any, state: dict[str, Any] = state) -> None:
            state.pop("ctx").__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for owner, name, original in reversed(patched):
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


def profile_once(engine: CoSalEngine, x: torch.Tensor) -> Any:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function(SEGMENT):
            engine.segment(x)
    return prof


def tables(prof: Any, top: int) -> tuple[float, list[tuple[str, float]], list[tuple[str, float, int]]]:
    """(segment ms, [(stage, inclusive ms)], [(operator, self ms, calls)]) of one profiled call."""
    events = prof.events()
    stages: dict[str, float] = defaultdict(float)
    for e in events:
        if e.name == SEGMENT or e.name.startswith(("backbone", "consensus", "GIM", "decoder")):
            stages[e.name] += e.cpu_time_total / 1000
    total = stages.pop(SEGMENT)
    top_level = [v for k, v in stages.items() if not k.startswith("decoder") or k == "decoder (all levels)"]
    stages[REST] = total - sum(top_level)
    ops = [(a.key, a.self_cpu_time_total / 1000, a.count) for a in prof.key_averages()
           if a.key.startswith("aten::") or a.key.startswith("mkldnn")]
    ops.sort(key=lambda r: -r[1])
    return total, sorted(stages.items(), key=lambda r: -r[1]), ops[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--top", type=int, default=14)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)

    vgg, vgg_weights = vgg16_gicd()
    default = CoSalEngine.from_pretrained(device="cpu")
    models = [("GICD-VGG16", vgg, vgg_weights), (default_title(default), default.model, "shipped weights")]
    load_before = os.getloadavg()[0]
    lines = []
    for title, model, weights in models:
        engine = CoSalEngine(model, device="cpu", precision=args.precision)  # type: ignore[arg-type]
        x = group_of_8(engine)
        engine.segment(x)  # warm-up
        with stage_labels(model):
            best = min((tables(profile_once(engine, x), args.top) for _ in range(args.runs)), key=lambda t: t[0])
        total, stages, ops = best
        lines += [f"## {title} ({weights}): {total:.0f} ms for 8 frames ({8000 / total:.2f} frames/s under the profiler)",
                  "", "| stage (inclusive) | ms | share |", "| --- | ---: | ---: |"]
        lines += [f"| {name} | {ms:.1f} | {ms / total:.1%} |" for name, ms in stages]
        lines += ["", "| operator (self time) | ms | share | calls |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| `{name}` | {ms:.1f} | {ms / total:.1%} | {n} |" for name, ms, n in ops]
        lines.append("")
    header = [
        "# Where the engine's time goes on this CPU (torch.profiler)",
        "",
        f"`CoSalEngine.segment` on 8 photos at 224, {args.precision}, {args.threads} thread(s), torch {torch.__version__}, "
        f"{platform.machine()}, native bf16: {cpu_has_native_bf16()}; the call with the shortest total of "
        f"{args.runs} profiled calls. Load average (1 min) before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f} "
        "(a shared machine: shares are steadier than milliseconds).",
        "",
        "Stages overlap where they nest (a decoder level is inside 'decoder (all levels)'; GIM's CAM is "
        "outside GIM's gradient). Made with `python benchmarks/profile_engine.py "
        f"--threads {args.threads} --runs {args.runs} --out ...`.",
        "",
    ]
    write_results("\n".join(header + lines), args.out)


if __name__ == "__main__":
    main()
