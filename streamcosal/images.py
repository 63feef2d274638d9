"""Image groups on disk: finding them, segmenting folders of groups, writing maps.

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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .engine import CoSalEngine, resize_map, to_uint8
from .imagefile import IMAGE_SUFFIXES, ImageReadError, read_image


@dataclass
class Failure:
    """What could not be processed and why."""

    path: Path
    reason: str


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
