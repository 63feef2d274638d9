"""The ablation table (like the paper's Table 2) on the validation split of configs/lite0.toml.

    python reports/training/ablation.py [RUN ...]      # ABLATION_THREADS=1: one torch thread (default 2)

Rows: the Lite0 and Lite2 ablations (configs/lite0*.toml, configs/lite2_abl*.toml), the stages of the
default model's schedule (reports/training/schedule.py) and test-time settings of the shipped models.
With RUN names (``lite0``, ``center``, ...; ``none`` to only rewrite the table) only those rows
are scored again; the others keep their scores from ablation.parquet (written after every row), so
finished runs can be scored while others still train.

Scores each variant's best checkpoint (reports/training/<run>/best.pt, where training writes it) at
its input size (``<run>+320px``: at 320; ``+flip``: with test-time flip, ``CoSalEngine(flip=True)``;
``+last``: the run's last epoch, its last.pt, instead of its best; ``+emb0.4``: GIM with that
embedding share instead of the checkpoint's, ``model.gim.gradient_induced_weights``; ``+gate0.5``: the
object-prototype gate with that exponent instead of the checkpoint's, ``model.prototype``), and a
center-prior floor on the held-out PASCAL groups (all images), the held-out DAVIS videos' jigsaw
composites and their plain frames (24 evenly spaced frames per video), and writes ablation.parquet
and ablation_table.md. ``steps``: the training steps behind the kept checkpoint, earlier stages
included. Checkpoints were selected on a smaller subsample of the same split (24 images per PASCAL
group, 8 frames per video), so these numbers are optimistic for every variant alike.
"""

import functools
import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from streamcosal.model import load_checkpoint
from streamcosal.training.config import load_config
from streamcosal.training.validation import center_prior, model_predictor, score, validation_set

HERE = Path(__file__).resolve().parent
ABLATIONS = (  # label, stage-1 run name, GIM, ARM, jigsaw
    ("GICD (GIM + ARM + jigsaw)", "lite0", True, True, True),
    ("no GIM (plain FPN top)", "lite0_nogim", False, True, True),
    ("no ARM", "lite0_noarm", True, False, True),
    ("no jigsaw", "lite0_nojigsaw", True, True, False),
)
STAGES = (  # label suffix, run name (from the stage-1 name), steps trained before the run (its [model] init)
    ("", "{}_stage2", 200),
    (", stage 1", "{}", 0),
)
VARIANTS = [(label + suffix, run.format(name), gim, arm, jig, before)
            for suffix, run, before in STAGES for label, name, gim, arm, jig in ABLATIONS]
VARIANTS += [  # the ablation on EfficientNet-Lite2, every row 200 steps of 8 images (configs/lite2_abl*.toml)
    ("Lite2 200 steps: GICD (copy-paste + jigsaw)", "lite2_abl", True, True, True, 0),
    ("Lite2 200 steps: no GIM", "lite2_abl_nogim", False, True, True, 0),
    ("Lite2 200 steps: no ARM", "lite2_abl_noarm", True, False, True, 0),
    ("Lite2 200 steps: no jigsaw, no copy-paste", "lite2_abl_nojigsaw", True, True, False, 0),
    ("Lite2 200 steps: jigsaw-only data recipe", "lite2_abl_norecipe", True, True, True, 0),
    ("Lite2 200 steps: GICD, GIM with embedding share 0.4 (test time)", "lite2_abl+emb0.4", True, True, True, 0),
    ("Lite2 200 steps: GICD, gate 0.5 (test time)", "lite2_abl+gate0.5", True, True, True, 0),
    ("Lite2 200 steps: no GIM, gate 0.5 (test time)", "lite2_abl_nogim+gate0.5", False, True, True, 0),
]
VARIANTS += [  # the default model's schedule (EfficientNet-Lite2, copy-paste composites, groups of 8)
    ("GICD on EfficientNet-Lite2, copy-paste + jigsaw, groups of 8 (lite2_cp: the default's first stage)", "lite2_cp",
     True, True, True, 0),
    ("lite2_cp fine-tuned with copy-paste both ways (lite2_ft: lite2_all's held-out twin)", "lite2_ft",
     True, True, True, 1200),
    ("lite2_ft's schedule with the validation groups as training data (lite2_all: NOT held out)", "lite2_all",
     True, True, True, 1200),
    ("lite2_ft fine-tuned multi-scale (lite2_ms), last epoch: the default's held-out twin", "lite2_ms+last+224px",
     True, True, True, 1800),
    ("lite2_ms, last epoch, run at 256 px", "lite2_ms+last", True, True, True, 1800),
    ("lite2_all fine-tuned multi-scale (lite2_all_ms: the default's decoder, NOT held out)", "lite2_all_ms",
     True, True, True, 1800),
]
VARIANTS += [  # engine options: "+320px" runs at 320 px, "+flip" adds test-time flip
    ("lite2_ft with test-time flip", "lite2_ft+flip", True, True, True, 1200),
    ("lite2_ft run at 320 px", "lite2_ft+320px", True, True, True, 1200),
    ("lite2_ft at 320 px with flip", "lite2_ft+320px+flip", True, True, True, 1200),
    ("lite2_all at 320 px with flip (NOT held out)", "lite2_all+320px+flip", True, True, True, 1200),
]
VARIANTS += [  # the shipped settings, test time on the same decoders: embedding share, prototype gate, 288 px
    ("lite2_ms, last epoch, GIM embedding share 0.4 (test time only)", "lite2_ms+last+224px+emb0.4",
     True, True, True, 1800),
    ("lite2_ms, last epoch, GIM of the embedding consensus only (share 1, test time)", "lite2_ms+last+224px+emb1",
     True, True, True, 1800),
    ("lite2_ms, last epoch, share 0.4, run at 256 px", "lite2_ms+last+emb0.4", True, True, True, 1800),
    ("lite2_ms, last epoch, share 0.4 with test-time flip", "lite2_ms+last+224px+emb0.4+flip",
     True, True, True, 1800),
    ("lite2_ms, last epoch, share 0.4 at 256 px with flip", "lite2_ms+last+emb0.4+flip", True, True, True, 1800),
    ("lite2_all_ms with share 0.4 (test time; NOT held out)", "lite2_all_ms+emb0.4", True, True, True, 1800),
    ("lite2_ms, last epoch, share 0.4, object-prototype gate 0.5 (test time only)",
     "lite2_ms+last+224px+emb0.4+gate0.5", True, True, True, 1800),
    ("lite2_ms, last epoch, share 0.4, gate 0.5, with test-time flip", "lite2_ms+last+224px+emb0.4+gate0.5+flip",
     True, True, True, 1800),
    ("lite2_all_ms, share 0.4, gate 0.5 (the default's settings; NOT held out)", "lite2_all_ms+emb0.4+gate0.5",
     True, True, True, 1800),
    ("lite2_ms, last epoch, share 0.4, gate 0.5, run at 288 px", "lite2_ms+last+288px+emb0.4+gate0.5",
     True, True, True, 1800),
    ("lite2_all_ms, share 0.4, gate 0.5, run at 288 px (NOT held out)", "lite2_all_ms+288px+emb0.4+gate0.5",
     True, True, True, 1800),
]
VARIANTS += [  # GIM trained at the share the engine runs, with the shared-regions consensus (configs/lite2_sr_*.toml)
    ("lite2_sr_ms (shared regions in training), last epoch, share 0.4, gate 0.5", "lite2_sr_ms+last+224px+emb0.4+gate0.5",
     True, True, True, 1800),
    ("lite2_sr_ms, last epoch, share 0.4, gate 0.5, run at 288 px", "lite2_sr_ms+last+288px+emb0.4+gate0.5",
     True, True, True, 1800),
]
COLUMNS = [f"{kind}_{m}" for kind in ("groups", "composites", "frames") for m in ("maxF", "S", "MAE")]


def main() -> None:
    torch.set_num_threads(int(os.environ.get("ABLATION_THREADS", "2")))
    config = load_config(HERE.parents[1] / "configs" / "lite0.toml")
    # by input size (the composites are made at it)
    val_at = functools.cache(lambda size: validation_set(config, max_images=0, max_frames=24, size=size))
    val = val_at(config.model.input_size)
    wanted = set(sys.argv[1:]) or {"center", *(v[1] for v in VARIANTS)}
    store = HERE / "ablation.parquet"
    kept = {r["run"]: r for r in pq.read_table(store).to_pylist()} if store.is_file() else {}
    order = ["center", *(v[1] for v in VARIANTS)]

    def save() -> list[dict]:
        rows = [kept[run] for run in order if run in kept]
        pq.write_table(pa.Table.from_pylist(rows), store)
        return rows

    center = {"variant": "center prior (Gaussian, sigma 0.25)", "run": "center", "gim": "", "arm": "", "jigsaw": "",
              "steps": "", "epoch": ""}
    if "center" in wanted:
        kept["center"] = {**center, **score(center_prior, val)}
    elif "center" in kept:
        kept["center"] = {**center, **{k: kept["center"][k] for k in COLUMNS}}
    for label, run, gim, arm, jig, before in VARIANTS:
        name, *options = run.split("+")
        path = HERE / name / ("last.pt" if "last" in options else "best.pt")
        if run not in wanted:  # keep its row as scored before (checkpoints are not in git), under today's label
            if run in kept:
                kept[run]["variant"] = label
            continue
        if not path.is_file():
            print(f"skipped {run}: {path} not found")
            continue
        model, meta = load_checkpoint(path)
        model.embedding_share = next((float(o.removeprefix("emb")) for o in options if o.startswith("emb")),
                                     model.embedding_share)
        model.prototype_gate = next((float(o.removeprefix("gate")) for o in options if o.startswith("gate")),
                                    model.prototype_gate)
        epoch, step = meta["extra"]["epoch"], meta["extra"]["step"]
        row = {"variant": label, "run": run, "gim": "x" if gim else "", "arm": "x" if arm else "",
               "jigsaw": "x" if jig else "", "steps": str(before + step), "epoch": str(epoch)}
        size = next((int(o.removesuffix("px")) for o in options if o.endswith("px")), meta["input_size"])
        row.update(score(model_predictor(model, torch.device("cpu"), flip="flip" in options), val_at(size)))
        print(label, {k: round(row[k], 4) for k in COLUMNS})
        kept[run] = row
        save()
    rows = save()
    n = {kind: sum(len(g.masks) for g in val if g.kind == kind) for kind in ("groups", "composites", "frames")}
    lines = [
        ("| variant | GIM | ARM | JT | steps | best epoch | PASCAL maxF | S | MAE "
         "| composites maxF | S | MAE | frames maxF | S | MAE |"),
        "| --- | :-: | :-: | :-: | ---: | :-: |" + " ---: |" * 9,
    ]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['gim']} | {r['arm']} | {r['jigsaw']} | {r['steps']} | {r['epoch']} | "
                     + " | ".join(f"{r[c]:.3f}" for c in COLUMNS) + " |")
    table = "\n".join(lines)
    (HERE / "ablation_table.md").write_text(
        f"Validation split (held out from training): PASCAL Chair/Dog/Sofa ({n['groups']} images), "
        f"DAVIS blackswan/car-roundabout/goat/libby as jigsaw composites ({n['composites']}) and plain "
        f"frames ({n['frames']}).\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
