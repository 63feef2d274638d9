"""Windows of 8 frames against 32 on DAVIS (docs/speed.md, On a GPU): the window a GPU runs by default.

    python reports/guided/window_sizes.py     # the default on the 14 DAVIS videos -> window_sizes.md

Each video (every frame, 854x480) is segmented as the pipeline's global mode does (the consensus of 32
frames sampled over the video; windows gated against the prototypes of every frame before) in windows
of 8 and of 32 frames, by the embedded default in fp32 on the CPU, and scored against the masks: maxF /
S / mean IoU of the 0.5-masks after guided upsampling (the default's). A window also bounds the images
whose shared regions make GIM's embedding consensus and whose prototypes make the gate's group object.
"""

from __future__ import annotations

import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from measure import DATA, score, video_maps  # reports/guided/measure.py
from PIL import Image
from rich.progress import track

from streamcosal.inference.engine import CoSalEngine

WINDOWS = (8, 32)


def cpu_name() -> str:
    """The CPU's model name (Linux), else the machine's architecture."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.is_file() else []
    return names[0] if names else platform.machine()


def main() -> None:
    torch.set_num_threads(2)
    engine = CoSalEngine.from_pretrained(device="cpu", precision="fp32")
    videos = sorted(p.name for p in (DATA / "davis2016" / "images").iterdir())
    rows, start = [], time.time()
    for video in track(videos, description="videos"):
        paths = sorted((DATA / "davis2016" / "images" / video).glob("*.jpg"))
        images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
        masks = [np.asarray(Image.open(DATA / "davis2016" / "masks" / video / f"{p.stem}.png").convert("L"))
                 for p in paths]
        rows.append((video, len(paths), [score(video_maps(engine, images, window=w), images, masks)["guided"]
                                         for w in WINDOWS]))
    lines = [f"# Windows of {WINDOWS[0]} and {WINDOWS[1]} frames: {engine.name} {engine.version}", "",
             (f"`python reports/guided/window_sizes.py` ({time.time() - start:.0f} s; {datetime.now(UTC):%Y-%m-%d}, "
              f"fp32, {torch.get_num_threads()} threads on {os.cpu_count()} cores, {cpu_name()}). Global mode, guided "
              "upsampling; maxF / S / mean IoU of the 0.5-masks."), "",
             "| video | frames | " + " | ".join(f"window {w}: maxF / S / IoU" for w in WINDOWS) + " |",
             "| --- | ---: |" + " --- |" * len(WINDOWS)]
    for video, n, scores in rows:
        lines.append(f"| {video} | {n} | " + " | ".join(" / ".join(f"{v:.3f}" for v in s) for s in scores) + " |")
    means = np.mean([scores for _, _, scores in rows], axis=0)
    lines.append("| mean of the videos | | " + " | ".join(" / ".join(f"**{v:.3f}**" for v in m) for m in means) + " |")
    Path(__file__).with_name("window_sizes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
