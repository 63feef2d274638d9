"""Per-group accuracy on the people-aware validation split (configs/lite2_people_cp.toml's): one column
per model, one row per held-out group, plain and as jigsaw composites.

    python reports/training/groups.py LABEL=CHECKPOINT[+emb<share>][+gate<exp>][+mean][+sizes] ...

e.g. ``default=streamcosal/weights/gicd_lite2.pt``. Scores every PASCAL image of the held-out groups
and 24 evenly spaced frames of each held-out video (plain and as composites, made at 224 px, the
default's input size), maxF per group (pysodmetrics, ``streamcosal.training.validation.score_groups``),
one torch thread (``GROUPS_THREADS``). Options: ``+mean``: GIM's embedding consensus as the plain
mean embedding, as before the shared-regions consensus of model/cooccurrence.py; ``+sizes``: each
part at the input size the engine picks for its images (``streamcosal.inference.transforms.
input_size_for``: for the default, PASCAL's photos at 224, the DAVIS videos' 854x480 frames and
their composites at 288). Columns scored before keep their values (groups.parquet); the table is
rewritten as groups_table.md. A column's label says whether its model was trained on these groups.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

import streamcosal.model.gim as gim
from streamcosal.inference.transforms import input_size_for
from streamcosal.model import load_checkpoint
from streamcosal.training.config import load_config
from streamcosal.training.validation import ValGroup, model_predictor, score_groups, validation_set

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
KIND_NAMES = {"groups": "group", "frames": "frames", "composites": "composites"}


def at_engine_sizes(val_at: Callable[[int], list[ValGroup]], smallest: int, largest: int) -> list[ValGroup]:
    """The validation groups, each made at the input size the engine picks for its source images (a
    video's composites at its frames' size)."""
    sources = {g.name: [m.shape for m in g.masks] for g in val_at(smallest) if g.kind != "composites"}
    out = []
    for group in val_at(smallest):
        size = input_size_for(sources[group.name], smallest, largest)
        out.append(next(g for g in val_at(size) if (g.kind, g.name) == (group.kind, group.name)))
    return out


def scored(spec: str, val_at: Callable[[int], list[ValGroup]], size: int) -> list[dict]:
    """One model's rows: ``LABEL=PATH[+option...]`` -> score_groups rows with ``model`` set; the groups
    made at ``size`` (the default's input size), or from it up to the checkpoint's largest (``+sizes``)."""
    label, _, target = spec.partition("=")
    path, *options = target.split("+")
    model, meta = load_checkpoint(ROOT / path)
    val = val_at(size)
    for option in options:
        if option.startswith("emb"):
            model.embedding_share = float(option.removeprefix("emb"))
        elif option.startswith("gate"):
            model.prototype_gate = float(option.removeprefix("gate"))
        elif option == "sizes":
            val = at_engine_sizes(val_at, size, meta["max_input_size"])
        elif option != "mean":
            raise SystemExit(f"{spec}: unknown option {option!r} (emb<share>, gate<exponent>, mean, sizes)")
    shared = gim.common_region_embedding
    if "mean" in options:
        gim.common_region_embedding = lambda head: head.embedding.mean(0, keepdim=True)
    try:
        rows = score_groups(model_predictor(model, torch.device("cpu")), val)
    finally:
        gim.common_region_embedding = shared
    return [{**row, "model": label} for row in rows]


def table(rows: list[dict]) -> str:
    """Markdown: a row per (kind, group), a maxF column per model, then the mean of each kind."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    keys = list(dict.fromkeys((r["kind"], r["group"]) for r in rows))
    value = {(r["model"], r["kind"], r["group"]): r["maxF"] for r in rows}
    lines = ["| held-out group | as | images | " + " | ".join(models) + " |",
             "| --- | --- | ---: |" + " ---: |" * len(models)]
    images = {(r["kind"], r["group"]): r["images"] for r in rows}
    for kind, group in keys:
        cells = [f"{value[(m, kind, group)]:.3f}" if (m, kind, group) in value else "" for m in models]
        lines.append(f"| {group} | {KIND_NAMES[kind]} | {images[(kind, group)]} | " + " | ".join(cells) + " |")
    for kind in KIND_NAMES:
        means = []
        for m in models:
            got = [value[(m, k, g)] for k, g in keys if k == kind and (m, k, g) in value]
            means.append(f"**{sum(got) / len(got):.3f}**" if got else "")
        lines.append(f"| mean of the groups | {KIND_NAMES[kind]} | | " + " | ".join(means) + " |")
    return "\n".join(lines)


def main() -> None:
    torch.set_num_threads(int(os.environ.get("GROUPS_THREADS", "1")))
    config = load_config(ROOT / "configs" / "lite2_people_cp.toml")
    val_at = functools.cache(lambda size: validation_set(config, max_images=0, max_frames=24, size=size))
    store = HERE / "groups.parquet"
    rows = pq.read_table(store).to_pylist() if store.is_file() else []
    for spec in sys.argv[1:]:
        new = scored(spec, val_at, config.model.input_size)
        rows = [r for r in rows if r["model"] != new[0]["model"]] + new
        pq.write_table(pa.Table.from_pylist(rows), store)
        print(f"scored {spec}", flush=True)
    text = table(rows)
    (HERE / "groups_table.md").write_text(
        "maxF per held-out group of configs/lite2_people_cp.toml's validation split: every PASCAL image "
        "of the groups, 24 evenly spaced frames of each video, plain and as jigsaw composites (each frame "
        "joined with a frame of another held-out video; `python reports/training/groups.py`).\n\n"
        f"{text}\n")
    print(text)


if __name__ == "__main__":
    main()
