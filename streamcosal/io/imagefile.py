"""Reading image files: one reader for every part of streamcosal (image groups, image sources,
evaluation, training data), with one rule for EXIF orientation.

PIL decodes; what people have on disk is converted to HxWx3 uint8 RGB (:func:`read_image`):
grayscale, palette, RGBA (alpha dropped), CMYK, 16-bit (scaled: 65535 -> 255) and float images;
masks and maps to HxW uint8 (:func:`read_gray`).

**EXIF orientation is applied** to every file, images and masks alike: a phone photo stored sideways
with an orientation tag is read upright, as every viewer shows it, so its map lines up with what the
user sees (and a map is written at the upright size). Files without the tag (every co-saliency
dataset here) are read as stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""File endings read as images, compared in lower case; where two files share a stem (a dataset's
mask beside an image), the earlier ending wins."""
MAX_PIXELS = 400_000_000
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


class ImageReadError(OSError):
    """An image file that cannot be decoded; the message names the file."""


def read_image(path: Path, max_side: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Read any common image upright (EXIF orientation applied) as HxWx3 uint8 RGB, and its
    original upright (H, W).

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images are converted. With
    ``max_side``, large JPEGs are decoded at a reduced scale (the original size is still returned).
    """
    img, size = _decode_upright(path, max_side)
    return _to_rgb8(img), size


def read_gray(path: Path) -> np.ndarray:
    """Read a mask or a map upright (EXIF orientation applied) as HxW uint8: colour converted to grey
    (ITU-R 601 luma), 16-bit scaled to 8.

    Raises:
        ImageReadError: the file is missing, empty or cannot be decoded (an ``OSError``).
    """
    img, _ = _decode_upright(path, None)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return np.ascontiguousarray(_to_rgb8(img)[:, :, 0])
    return np.ascontiguousarray(np.asarray(img.convert("L"), dtype=np.uint8))


def image_sizes(paths: Iterable[Path]) -> list[tuple[int, int]]:
    """(H, W) of each file as stored, from its header without decoding it (the short side is the
    upright image's); files that cannot be opened as images are left out (reading them says why)."""
    sizes = []
    for path in paths:
        try:
            with Image.open(path) as img:
                sizes.append((img.height, img.width))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            continue
    return sizes


def _decode_upright(path: Path, max_side: int | None) -> tuple[Image.Image, tuple[int, int]]:
    """The decoded image turned upright and its upright full (H, W); decoding errors name the file."""
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(f"{path}: empty file (0 bytes)")
        with Image.open(path) as img:
            size = (img.height, img.width)
            if size[0] * size[1] > MAX_PIXELS:
                raise ImageReadError(f"{path}: {size[1]}x{size[0]} is too large (over {MAX_PIXELS:,} pixels)")
            if img.getexif().get(ExifTags.Base.Orientation) in _TRANSPOSED:
                size = size[::-1]
            if max_side is not None and img.format == "JPEG":
                img.draft("RGB", (max_side, max_side))
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"{path}: cannot decode image ({err.__class__.__name__}: {err}); "
                             "the file is truncated, corrupted or not an image") from err
    return img, size


def _to_rgb8(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if a.max() > 255 else 255.0  # 16-bit files holding 8-bit values (0/1 label masks) keep them
        gray = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float32)
        gray = cv2.normalize(a, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def resize(array: np.ndarray, width: int, height: int, *, nearest: bool = False) -> np.ndarray:
    """cv2 resize: nearest for masks, area when shrinking, bilinear when enlarging."""
    if nearest:
        mode = cv2.INTER_NEAREST
    elif width < array.shape[1] or height < array.shape[0]:
        mode = cv2.INTER_AREA
    else:
        mode = cv2.INTER_LINEAR
    return cv2.resize(array, (width, height), interpolation=mode)
