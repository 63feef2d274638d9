"""Image groups on disk: reading any image people have, and segmenting folders of groups.

The layout of CoCA and CoSal2015: ``INPUT/<group>/<image>``; a folder of images with no
subfolders is one group. Maps are written at each image's original size to
``OUT/<group>/<stem>.png``, as the authors' test script writes them.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .engine import CoSalEngine, resize_map, to_uint8

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
MAX_PIXELS = 400_000_000


class ImageReadError(Exception):
    """An image file that cannot be decoded; the message names the file."""


@dataclass
class Failure:
    """What could not be processed and why."""

    path: Path
    reason: str


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


def find_groups(root: Path) -> dict[str, list[Path]]:
    """Groups of image files: one per subfolder, or the folder itself as one group when it has
    no subfolders. Non-image files are left out (by suffix); every group is listed, even empty."""
    if not root.is_dir():
        raise FileNotFoundError(f"input folder not found: {root}")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    folders = subdirs or [root]
    return {folder.name: sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            for folder in folders}


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a PNG atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"cannot encode PNG for {path}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.tobytes())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class FolderReport:
    """What ``segment_folders`` did: maps written per group, and every failure with its reason."""

    written: dict[str, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def segment_folders(input_dir: Path, out_dir: Path, engine: CoSalEngine, *, show_progress: bool = True) -> FolderReport:
    """Segment every group of ``input_dir`` and write 8-bit maps to ``out_dir/<group>/<stem>.png``.

    A bad image is reported and left out of its group; the rest of the group and the other groups
    are still processed.
    """
    groups = find_groups(input_dir)
    report = FolderReport()
    total = sum(len(v) for v in groups.values())
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not show_progress) as progress:
        task = progress.add_task("images", total=total)
        for group, paths in groups.items():
            progress.update(task, description=f"group {group}")
            batch, sizes, kept = [], [], []
            for path in paths:
                try:
                    rgb, size = read_image(path, max_side=4 * engine.input_size)
                except ImageReadError as err:
                    report.failures.append(Failure(path, str(err)))
                    progress.advance(task)
                    continue
                batch.append(engine.prepare(rgb))
                sizes.append(size)
                kept.append(path)
            if not kept:
                report.failures.append(Failure(input_dir / group if len(groups) > 1 else input_dir,
                                               f"group {group!r} has no readable images"))
                continue
            pred = engine.segment(torch.stack(batch))
            for path, size, saliency in zip(kept, sizes, pred.maps):
                write_png(out_dir / group / f"{path.stem}.png", to_uint8(resize_map(saliency, size)))
                progress.advance(task)
            report.written[group] = len(kept)
    return report
