"""The consensus's input size: the 14 DAVIS videos segmented at S against the consensus of their 32
sampled frames at other sizes (docs/accuracy.md: what collapses breakdance at 640x360 and 288 px).

    python reports/guided/consensus_sizes.py        # the default -> reports/guided/consensus_sizes.md

Each video is shrunk to a frame size (INTER_AREA), segmented at S in windows of 8 against the running
prototype, as the pipeline's global mode does, and scored by the mean IoU of its guided 0.5-masks.
The consensus is GICD's (softmax of the summed logits) of the 32 sampled frames at the size C, or,
for "256+288", of the 64 rows of logits of the same frames at both sizes.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import torch
from measure import DATA  # reports/guided/measure.py
from PIL import Image

from streamcosal.inference.engine import CoSalEngine
from streamcosal.inference.guided import guided_upsample
from streamcosal.inference.imagenet import top_classes
from streamcosal.model import consensus_from_logits

RUNS = [((640, 360), 288, ["224", "256", "288", "256+288"]), ((854, 480), 288, ["224", "256", "288", "256+288"]),
        ((432, 240), 224, ["224", "256+288"])]
"""(frame size, S, consensus sizes): S and C equal is what the pipeline runs (at 640x360 it runs 256)."""


def video_iou(engine: CoSalEngine, x: torch.Tensor, consensus: torch.Tensor, images: list[np.ndarray],
              masks: list[np.ndarray], window: int = 8) -> float:
    prior, ious = None, []
    for start in range(0, len(x), window):
        pred = engine.segment(x[start:start + window], consensus, prior)
        sums = [level.sum(0) for level in pred.prototypes]
        prior = sums if prior is None else [a + b for a, b in zip(prior, sums)]
        for saliency, image, mask in zip(pred.maps, images[start:], masks[start:]):
            p = guided_upsample(saliency, image) >= 0.5
            ious.append((p & mask).sum() / max((p | mask).sum(), 1))
    return float(np.mean(ious))


def main() -> None:
    videos = sorted(p.name for p in (DATA / "davis2016" / "images").iterdir())
    lines = ["# The consensus's input size", "", (f"`python reports/guided/{Path(__file__).name}`: the default, "
             "14 DAVIS videos at a frame size, segmented at S against the consensus of 32 sampled frames at C; "
             "mean IoU of the guided 0.5-masks; the consensus's top class in brackets where it is not the same "
             "for every C."), ""]
    start = time.time()
    for (w, h), size, variants in RUNS:
        engine = CoSalEngine.from_pretrained(device="cpu", precision="fp32", input_size=size, upsampling="guided")
        lines += [f"## {w}x{h} at S = {size}", "", "| video | " + " | ".join(f"C = {v}" for v in variants) + " |",
                  "| --- |" + " ---: |" * len(variants)]
        means = {v: [] for v in variants}
        for video in videos:
            paths = sorted((DATA / "davis2016" / "images" / video).glob("*.jpg"))
            images = [cv2.resize(np.asarray(Image.open(p).convert("RGB")), (w, h), interpolation=cv2.INTER_AREA)
                      for p in paths]
            masks = [cv2.resize(np.asarray(Image.open(DATA / "davis2016" / "masks" / video / f"{p.stem}.png")
                                           .convert("L")), (w, h), interpolation=cv2.INTER_NEAREST) > 127
                     for p in paths]
            x = torch.stack([engine.prepare(im, size) for im in images])
            sample = np.linspace(0, len(images) - 1, 32).round().astype(int)
            cells, classes = [], []
            for variant in variants:
                logits = [engine.logits(torch.stack([engine.prepare(images[i], int(c)) for i in sample]))
                          for c in variant.split("+")]
                consensus = consensus_from_logits(torch.cat(logits))
                means[variant].append(video_iou(engine, x, consensus, images, masks))
                classes.append(top_classes(consensus[0].numpy(), 1)[0][0])
                cells.append(f"{means[variant][-1]:.3f}")
            if len(set(classes)) > 1:
                cells = [f"{c} ({k.split(',')[0]})" for c, k in zip(cells, classes)]
            lines.append(f"| {video} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
        lines += ["| **mean** | " + " | ".join(f"**{np.mean(means[v]):.3f}**" for v in variants) + " |", ""]
    lines.append(f"({time.time() - start:.0f} s)")
    Path(__file__).with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
