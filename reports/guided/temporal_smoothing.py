"""Temporal smoothing of a video's maps, measured and not built (docs/accuracy.md).

    python reports/guided/temporal_smoothing.py     # the held-out twin -> reports/guided/temporal_smoothing.md

The default's held-out twin (lite2_ms's last epoch, share 0.4, gate 0.5) makes the [S,S] maps of
DAVIS videos at 854x480 (288 px) as the pipeline's global mode does (32 consensus frames, windows of
8 with the running prototype); the maps of neighbouring frames are then averaged before guided
upsampling, and the 0.5-masks scored by mean IoU. Kernels: 1-2-1 over the whole video; 1-2-1 inside
each window, with the previous window's last map behind and the window's last map repeated ahead
(what the pipeline could do without look-ahead across windows); causal (m[t-1] + 2 m[t]) / 3 and
(m[t-1] + m[t]) / 2.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from measure import DATA, HELD_OUT, video_maps  # reports/guided/measure.py
from PIL import Image

from streamcosal.inference.engine import CoSalEngine
from streamcosal.inference.guided import guided_upsample

TWIN = Path(__file__).resolve().parents[1] / "training" / "lite2_ms" / "last.pt"
TRAINED_ON = ["bmx-trees", "breakdance", "dance-twirl", "paragliding-launch"]  # fast motion, for contrast
WINDOW = 8


def whole(maps: np.ndarray) -> np.ndarray:
    padded = np.concatenate([maps[:1], maps, maps[-1:]])
    return (padded[:-2] + 2 * padded[1:-1] + padded[2:]) / 4


def in_window(maps: np.ndarray) -> np.ndarray:
    return np.concatenate([whole_with(maps[max(start - 1, 0):start], maps[start:start + WINDOW])
                           for start in range(0, len(maps), WINDOW)])


def whole_with(behind: np.ndarray, window: np.ndarray) -> np.ndarray:
    padded = np.concatenate([behind if len(behind) else window[:1], window, window[-1:]])
    return (padded[:-2] + 2 * padded[1:-1] + padded[2:]) / 4


KERNELS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda maps: maps,
    "1-2-1, whole video": whole,
    "1-2-1, in each window": in_window,
    "causal 1-2": lambda maps: np.concatenate([maps[:1], (maps[:-1] + 2 * maps[1:]) / 3]),
    "causal 1-1": lambda maps: np.concatenate([maps[:1], (maps[:-1] + maps[1:]) / 2]),
}


def main() -> None:
    engine = CoSalEngine.from_checkpoint(TWIN, device="cpu", precision="fp32", embedding_share=0.4,
                                         prototype_gate=0.5, input_size=288, upsampling="guided")
    lines = ["# Temporal smoothing of the maps (measured, not built)", "",
             (f"`python reports/guided/{Path(__file__).name}`: the held-out twin at 288 px on DAVIS at 854x480, "
             "mean IoU of the guided 0.5-masks."), "",
             "| video | " + " | ".join(KERNELS) + " |", "| --- |" + " ---: |" * len(KERNELS)]
    scores: list[list[float]] = []
    for video in HELD_OUT["davis2016"] + TRAINED_ON:
        paths = sorted((DATA / "davis2016" / "images" / video).glob("*.jpg"))
        images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
        masks = [np.asarray(Image.open(DATA / "davis2016" / "masks" / video / f"{p.stem}.png").convert("L")) > 127
                 for p in paths]
        maps = video_maps(engine, images, window=WINDOW)
        row = []
        for smooth in KERNELS.values():
            ious = []
            for saliency, image, mask in zip(smooth(maps), images, masks):
                p = guided_upsample(saliency, image) >= 0.5
                ious.append((p & mask).sum() / max((p | mask).sum(), 1))
            row.append(float(np.mean(ious)))
        scores.append(row)
        held_out = "" if video in HELD_OUT["davis2016"] else " (trained on)"
        lines.append(f"| {video}{held_out} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
        print(lines[-1], flush=True)
    n = len(HELD_OUT["davis2016"])
    for label, part in (("mean, 4 held out", scores[:n]), ("mean, all 8", scores)):
        lines.append(f"| **{label}** | " + " | ".join(f"{v:.4f}" for v in np.mean(part, axis=0)) + " |")
    Path(__file__).with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
