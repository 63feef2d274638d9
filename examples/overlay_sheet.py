"""The README's picture: evenly spaced frames of an overlay video in a grid.

    python examples/overlay_sheet.py runs/example/overlays/<run>/<key>.mp4 docs/example_overlay.png

Frames i * n / count for i = 0..count-1 (n: the video's frames), `columns` a row, at their own size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import numpy as np
from PIL import Image


def overlay_sheet(video: Path, out: Path, count: int = 6, columns: int = 3) -> None:
    """Write a grid of `count` evenly spaced frames of `video` to the image `out`."""
    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise SystemExit(f"{video}: no frames could be decoded")
    picked = [frames[i * len(frames) // count] for i in range(count)]
    rows = [np.concatenate(picked[r:r + columns], axis=1) for r in range(0, count, columns)]
    Image.fromarray(np.concatenate(rows, axis=0)).save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path, help="an overlay video (streamcosal video ... --overlay)")
    parser.add_argument("out", type=Path, help="the image to write (.png)")
    parser.add_argument("--count", type=int, default=6, help="frames to show (a multiple of --columns)")
    parser.add_argument("--columns", type=int, default=3)
    args = parser.parse_args()
    overlay_sheet(args.video, args.out, args.count, args.columns)


if __name__ == "__main__":
    main()
