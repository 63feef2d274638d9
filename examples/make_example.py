"""Build the bundled example from scikit-image's sample photos (public domain / CC0).

    python examples/make_example.py

Writes, next to this script:
    cat.mp4              6 s, 640x360, 10 fps, H.264: the cat (Chelsea) moves and changes size
                         across the frame while the object beside it changes every second
                         (coffee, astronaut, rocket, coins, camera, Hubble deep field)
    groups/cat/*.jpg     6 collages in which the cat recurs beside a different object each time

The cat is the only thing common to all frames: the co-salient object GICD should find.
Photos (see each `skimage.data` function's docstring): chelsea (CC0, Stefan van der Walt),
coffee (CC0, Rachel Michetti), astronaut (NASA, public domain), rocket (SpaceX, public domain),
coins (Brooklyn Museum, no known copyright restrictions), camera (CC0, Lav Varshney),
hubble_deep_field (NASA, public domain).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from streamcosal.run.overlay import VideoSink

HERE = Path(__file__).resolve().parent
WIDTH, HEIGHT, FPS, SECONDS = 640, 360, 10, 6


def rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image


def others() -> list[np.ndarray]:
    """The changing objects, as RGB uint8."""
    hubble = data.hubble_deep_field()[200:600, 300:700]
    return [rgb(f()) for f in (data.coffee, data.astronaut, data.rocket, data.coins, data.camera)] + [hubble]


def background(width: int, height: int) -> np.ndarray:
    """A soft vertical gradient, so only the photos stand out."""
    ramp = np.linspace(200, 150, height, dtype=np.float32)[:, None, None]
    tint = np.array([1.0, 0.97, 0.92], np.float32)
    return np.broadcast_to(ramp * tint, (height, width, 3)).astype(np.uint8).copy()


def paste(canvas: np.ndarray, photo: np.ndarray, height: int, center_x: int, center_y: int) -> None:
    """Paste `photo` scaled to `height` pixels, centred at (center_x, center_y), clipped to the canvas."""
    width = round(photo.shape[1] * height / photo.shape[0])
    small = cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)
    top, left = center_y - height // 2, center_x - width // 2
    t0, l0 = max(top, 0), max(left, 0)
    t1, l1 = min(top + height, canvas.shape[0]), min(left + width, canvas.shape[1])
    canvas[t0:t1, l0:l1] = small[t0 - top:t1 - top, l0 - left:l1 - left]


def video_frame(index: int, cat: np.ndarray, objects: list[np.ndarray]) -> np.ndarray:
    """Frame `index`: the cat travels left to right, breathing in size; the other object sits on
    the other side and changes every second."""
    t = index / FPS
    progress = t / SECONDS
    cat_height = round(150 + 50 * math.sin(2 * math.pi * t / 3))
    cat_x = round(130 + progress * (WIDTH - 260))
    frame = background(WIDTH, HEIGHT)
    other = objects[int(t) % len(objects)]
    other_x = WIDTH - 120 if cat_x < WIDTH / 2 else 120
    paste(frame, other, 140, other_x, HEIGHT // 2 + 40)
    paste(frame, cat, cat_height, cat_x, HEIGHT // 2 - 10 + round(20 * math.sin(2 * math.pi * t / 2)))
    return frame


def collage(index: int, cat: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 480x320 image: the cat on one side (random size and height), another photo on the other."""
    width, height = 480, 320
    canvas = background(width, height)
    cat_left = index % 2 == 0
    cat_x = int(rng.integers(100, 150)) if cat_left else int(rng.integers(330, 380))
    paste(canvas, other, int(rng.integers(100, 140)), width - cat_x, int(rng.integers(130, 190)))
    paste(canvas, cat, int(rng.integers(110, 150)), cat_x, int(rng.integers(140, 180)))
    return canvas


def main() -> None:
    cat = data.chelsea()
    objects = others()
    with VideoSink(HERE / "cat.mp4", fps=FPS, crf=28, preset="slow") as sink:
        for i in range(FPS * SECONDS):
            sink.write(video_frame(i, cat, objects), i / FPS)
    folder = HERE / "groups" / "cat"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    for i, other in enumerate(objects):
        image = collage(i, cat, other, rng)
        cv2.imwrite(str(folder / f"cat_{i + 1}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"wrote {HERE / 'cat.mp4'} and {len(objects)} images in {folder}")


if __name__ == "__main__":
    main()
