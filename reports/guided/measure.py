"""Guided against bilinear upsampling of the same maps, per group of ../shared/data (docs/accuracy.md).

    python reports/guided/measure.py                       # the default on every group -> default.md
    python reports/guided/measure.py --weights reports/training/lite2_ms/last.pt --embedding-share 0.4 \\
        --prototype-gate 0.5 --sizes 224 288 --held-out --out reports/guided/twin.md   # the held-out twin
    python reports/guided/measure.py --sets davis2016 --frame-size 640x360 --sizes 256 256 --out 360p_256.md

Videos (DAVIS, whole, at their 854x480) run as the pipeline runs them in global mode: the consensus of
32 frames sampled over the video, windows of 8 frames gated against the prototypes of every frame
before; photo groups (PASCAL, Oxford pets, Weizmann horses) as `streamcosal images` runs them, one
group at a time. Each map is brought to its frame's size both ways and scored against the frame's
mask: maxF and S (pysodmetrics over the group's images), and the mean IoU of the 0.5-masks.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import py_sod_metrics as sod
import torch
from PIL import Image
from rich.progress import track

from streamcosal.inference.engine import CoSalEngine
from streamcosal.inference.guided import guided_upsample
from streamcosal.inference.transforms import resize_map, to_uint8
from streamcosal.model import consensus_from_logits

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
HELD_OUT = {"davis2016": ["blackswan", "car-roundabout", "goat", "libby"], "pascal_coseg": ["Chair", "Dog", "Sofa"]}
SETS = ("davis2016", "pascal_coseg", "oxford_pets", "weizmann_horse")
UPSAMPLINGS = {"bilinear": lambda saliency, image: resize_map(saliency, image.shape[:2]),
               "guided": guided_upsample}


def video_maps(engine: CoSalEngine, images: list[np.ndarray], window: int = 8,
               consensus_frames: int = 32) -> np.ndarray:
    """[N,S,S] maps of a video's frames, as the pipeline's global mode makes them."""
    size = engine.size_for(im.shape for im in images)
    x = torch.stack([engine.prepare(im, size) for im in images])
    sample = np.linspace(0, len(x) - 1, min(consensus_frames, len(x))).round().astype(int)
    consensus = consensus_from_logits(engine.logits(x[sample]))
    prior, maps = None, []
    for start in range(0, len(x), window):
        pred = engine.segment(x[start:start + window], consensus, prior)
        sums = [level.sum(0) for level in pred.prototypes]
        prior = sums if prior is None else [a + b for a, b in zip(prior, sums)]
        maps.append(pred.maps)
    return np.concatenate(maps)


def group_maps(engine: CoSalEngine, images: list[np.ndarray]) -> np.ndarray:
    size = engine.size_for(im.shape for im in images)
    return engine.segment(torch.stack([engine.prepare(im, size) for im in images])).maps


def score(maps: np.ndarray, images: list[np.ndarray],
          masks: list[np.ndarray]) -> dict[str, tuple[float, float, float]]:
    """Per upsampling: (maxF, S, mean IoU of the 0.5-masks) over the group."""
    out = {}
    for name, upsample in UPSAMPLINGS.items():
        fm = sod.FmeasureV2({"fm": sod.FmeasureHandler(with_dynamic=True, with_adaptive=False, beta=0.3)})
        sm, ious = sod.Smeasure(alpha=0.5), []
        for saliency, image, mask in zip(maps, images, masks):
            prob = upsample(saliency, image)
            fm.step(to_uint8(prob), mask)
            sm.step(to_uint8(prob), mask)
            pred, truth = prob >= 0.5, mask > 127
            ious.append((pred & truth).sum() / max((pred | truth).sum(), 1))
        out[name] = (float(fm.get_results()["fm"]["dynamic"].max()), float(sm.get_results()["sm"]),
                     float(np.mean(ious)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, help="a checkpoint (default: the embedded default)")
    parser.add_argument("--embedding-share", type=float)
    parser.add_argument("--prototype-gate", type=float)
    parser.add_argument("--sizes", type=int, nargs=2, metavar=("MIN", "MAX"),
                        help="input sizes (default: the checkpoint's)")
    parser.add_argument("--held-out", action="store_true", help="only the validation split's groups")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--frame-size", metavar="WxH", help="resize every image and mask to WxH first (INTER_AREA, "
                        "masks nearest): how a frame size runs")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("default.md"))
    args = parser.parse_args()
    options: dict[str, object] = {"device": "cpu", "precision": "fp32"}
    if args.sizes:
        options.update(input_size=args.sizes[0], max_input_size=args.sizes[1])
    for name in ("embedding_share", "prototype_gate"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    engine = (CoSalEngine.from_checkpoint(args.weights, **options) if args.weights  # type: ignore[arg-type]
              else CoSalEngine.from_pretrained(**options))  # type: ignore[arg-type]
    groups = [(s, g) for s in args.sets for g in sorted(p.name for p in (args.data / s / "images").iterdir())
              if not args.held_out or g in HELD_OUT.get(s, ())]
    rows, start = [], time.time()
    for dataset, group in track(groups, description="groups"):
        paths = sorted((args.data / dataset / "images" / group).glob("*.jpg"))
        images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
        masks = [np.asarray(Image.open(args.data / dataset / "masks" / group / f"{p.stem}.png").convert("L"))
                 for p in paths]
        if args.frame_size:
            w, h = map(int, args.frame_size.split("x"))
            images = [cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im in images]
            masks = [cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in masks]
        maps = (video_maps if dataset == "davis2016" else group_maps)(engine, images)
        size = engine.size_for(im.shape for im in images)
        rows.append((dataset, group, len(paths), size, score(maps, images, masks)))
    lines = [f"# Guided against bilinear upsampling: {engine.name} {engine.version}", "",
             (f"`python reports/guided/measure.py {' '.join(sys.argv[1:])}` ({time.time() - start:.0f} s). "
             "maxF / S / mean IoU of the 0.5-masks, bilinear -> guided, the same maps."), "",
             "| set | group | images | px | maxF | S | IoU |", "| --- | --- | ---: | ---: | --- | --- | --- |"]
    for dataset, group, n, size, r in rows:
        cells = [f"{r['bilinear'][i]:.3f} -> {r['guided'][i]:.3f}" for i in range(3)]
        lines.append(f"| {dataset} | {group} | {n} | {size} | " + " | ".join(cells) + " |")
    lines += ["", "| set | groups | maxF | S | IoU | groups better (IoU) |", "| --- | ---: | --- | --- | --- | ---: |"]
    for dataset in SETS:
        part = [r for d, _, _, _, r in rows if d == dataset]
        if part:
            mean = {k: np.mean([r[k] for r in part], axis=0) for k in UPSAMPLINGS}
            better = sum(r["guided"][2] > r["bilinear"][2] for r in part)
            cells = [f"{mean['bilinear'][i]:.3f} -> {mean['guided'][i]:.3f}" for i in range(3)]
            lines.append(f"| {dataset} | {len(part)} | " + " | ".join(cells) + f" | {better} of {len(part)} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
