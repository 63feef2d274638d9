"""Photo groups of mixed sizes: which frame should choose the group's input size (docs/accuracy.md)?

    python reports/guided/mixed_sizes.py     # the held-out twin -> reports/guided/mixed_sizes.md

The four held-out DAVIS videos (every second frame, 854x480) become photo groups in which every
fourth frame is a 320x180 thumbnail. Were the smallest frame to decide (320x180), the group would
run at 224 px; with the median frame deciding (CoSalEngine.size_for), it runs at 288. Each group is segmented
at both sizes by the default's held-out twin (lite2_ms's last epoch, share 0.4, gate 0.5, guided
upsampling), and the thumbnails and the large frames are scored apart: maxF / S / mean IoU of the
0.5-masks.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from measure import DATA, HELD_OUT, score  # reports/guided/measure.py
from PIL import Image

from streamcosal.inference.engine import CoSalEngine

TWIN = Path(__file__).resolve().parents[1] / "training" / "lite2_ms" / "last.pt"


def main() -> None:
    engines = {size: CoSalEngine.from_checkpoint(TWIN, device="cpu", precision="fp32", embedding_share=0.4,
                                                 prototype_gate=0.5, input_size=size, upsampling="guided")
               for size in (224, 288)}
    lines = ["# Mixed-size photo groups: the smallest frame (224 px) or the median frame (288 px) decides", "",
             (f"`python reports/guided/{Path(__file__).name}`: held-out DAVIS videos, every second frame at 854x480, "
             "every fourth of those a 320x180 thumbnail; the held-out twin; maxF / S / mean IoU of the 0.5-masks."), "",
             "| video | thumbnails at 224 | at 288 | large frames at 224 | at 288 |", "| --- | --- | --- | --- | --- |"]
    results: list[tuple[float, float, float]] = []
    for video in HELD_OUT["davis2016"]:
        paths = sorted((DATA / "davis2016" / "images" / video).glob("*.jpg"))[::2]
        images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
        masks = [np.asarray(Image.open(DATA / "davis2016" / "masks" / video / f"{p.stem}.png").convert("L"))
                 for p in paths]
        thumbs = list(range(0, len(images), 4))
        for i in thumbs:
            images[i] = cv2.resize(images[i], (320, 180), interpolation=cv2.INTER_AREA)
            masks[i] = cv2.resize(masks[i], (320, 180), interpolation=cv2.INTER_NEAREST)
        large = [i for i in range(len(images)) if i not in thumbs]
        cells: dict[str, list[str]] = {"thumbs": [], "large": []}
        for size, engine in engines.items():
            maps = engine.segment(torch.stack([engine.prepare(im, size) for im in images])).maps
            for part, index in (("thumbs", thumbs), ("large", large)):
                r = score(maps[index], [images[i] for i in index], [masks[i] for i in index])["guided"]
                cells[part].append(" / ".join(f"{v:.3f}" for v in r))
                results.append(r)
        lines.append(f"| {video} | " + " | ".join(cells["thumbs"] + cells["large"]) + " |")
        print(lines[-1], flush=True)
    mean = np.mean(np.reshape(results, (-1, 2, 2, 3)), axis=0)  # [video, size, part, metric] -> [size, part, metric]
    lines.append("| mean | " + " | ".join(" / ".join(f"{v:.3f}" for v in mean[size, part])
                                        for part in (0, 1) for size in (0, 1)) + " |")
    Path(__file__).with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
