"""Reading image files: one reader for every part of streamcosal (groups, image sources, training data).

PIL decodes; what people have on disk is converted to HxWx3 uint8 RGB: grayscale, palette, RGBA
(alpha dropped), CMYK, 16-bit (scaled: 65535 -> 255) and float images. Pixels are used as stored:
EXIF orientation is not applied, which is how co-saliency datasets' masks line up with their images.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
MAX_PIXELS = 400_000_000


class ImageReadError(OSError):
    """An image file that cannot be decoded; the message names the file."""


def read_image(path: Path, max_side: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Read any common image as HxWx3 uint8 RGB, and its original (H, W).

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images are converted. With
    ``max_side``, large JPEGs are decoded at a reduced scale (the original size is still returned).
    """
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(f"{path}: empty file (0 bytes)")
        with Image.open(path) as img:
            size = (img.height, img.width)
            if size[0] * size[1] > MAX_PIXELS:
                raise ImageReadError(f"{path}: {size[1]}x{size[0]} is too large (over {MAX_PIXELS:,} pixels)")
            if max_side is not None and img.format == "JPEG":
                img.draft("RGB", (max_side, max_side))
            img.load()
            rgb = _to_rgb8(img)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"{path}: cannot decode image ({err.__class__.__name__}: {err}); "
                             "the file is truncated, corrupted or not an image") from err
    return rgb, size


def _to_rgb8(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        gray = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float32)
        gray = cv2.normalize(a, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))
