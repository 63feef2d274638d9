"""Image groups on disk: finding them, segmenting folders of groups, writing maps.

The layout of CoCA and CoSal2015: ``INPUT/<group>/<image>``; a folder of images with no
subfolders is one group. Maps are written at each image's original size to
``OUT/<group>/<stem>.png``, as the authors' test script writes them (``<name>.png``, the file
name with its suffix, for images whose stems collide, e.g. ``a.jpg`` and ``a.png``).

No input is ever overwritten: an output folder that is an input folder, or a map path that is an
input file, is refused before any work starts. A full disk (or any write error) stops the run
with the maps written so far kept.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from streamcosal.inference.agreement import group_agreement
from streamcosal.inference.engine import CoSalEngine, GroupPrediction
from streamcosal.inference.imagenet import top_classes
from streamcosal.inference.transforms import resize_map, to_uint8
from streamcosal.io.imagefile import ImageReadError, image_files, image_sizes, read_image, subfolders
from streamcosal.run.interrupts import Interrupted
from streamcosal.storage.files import atomic_write


@dataclass
class Failure:
    """What could not be processed and why."""

    path: Path
    reason: str


class OutputError(OSError):
    """The maps cannot be written (an output that is an input, a full disk); the message names the
    file and what to do."""


def find_groups(root: Path) -> dict[str, list[Path]]:
    """Groups of image files: one per subfolder, or the folder itself as one group when it has
    no subfolders. Images beside subfolders form one more group named after the folder. Non-image
    files are left out (by suffix: :func:`left_out` names them); images of a format no installed
    decoder reads (HEIC without pillow-heif) and broken symbolic links are listed (reading them fails
    with a message naming them); every group is listed, even empty.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: images beside subfolders, and a subfolder with the folder's own name.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"input folder not found: {root}")
    name = root.resolve().name
    subdirs = [root / d for d in subfolders(root)]
    groups = {folder.name: _images(folder) for folder in subdirs}
    own = _images(root)
    if own or not subdirs:
        if name in groups:
            raise ValueError(f"{root} holds images and a subfolder {name!r} of its own name: move its "
                             f"{len(own)} images into a subfolder (a group), or rename the subfolder")
        groups[name] = own
    return groups


def _images(folder: Path) -> list[Path]:
    """The image files of ``folder`` by suffix, sorted (:func:`image_files`: hidden files left out); broken
    symbolic links included."""
    return [p for p in image_files(folder)[0] if p.is_file() or (p.is_symlink() and not p.exists())]


def left_out(root: Path, groups: Collection[str]) -> list[str]:
    """A note per group folder of ``root`` (of the groups named) holding files that are not images (by
    suffix), naming them: nothing is left out without a word."""
    name = root.resolve().name
    notes = []
    for group in groups:
        folder = root if group == name and not (root / group).is_dir() else root / group
        others = image_files(folder)[1] if folder.is_dir() else []
        if others:
            shown = ", ".join(p.name for p in others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            notes.append(f"group {group!r}: left out {len(others)} file(s) that are not images: {shown}")
        inner = subfolders(folder) if folder != root else []
        if inner:
            notes.append(f"group {group!r}: left out its subfolder(s) {', '.join(inner[:5])}: a group's images lie "
                         "in its own folder (one level below the input folder)")
    return notes


def map_names(paths: list[Path]) -> dict[Path, str]:
    """The output name (no suffix) of each image, distinct within the group so that no map is written over
    another: its stem, or its whole name where another image has the same stem (``a.jpg``, ``a.png`` ->
    ``a.jpg``, ``a.png``) or where its stem is another image's name (``a.jpg.png`` beside ``a.jpg``:
    ``a.jpg.png``, ``a.jpg``)."""
    stems = Counter(p.stem for p in paths)
    names = {p: p.stem if stems[p.stem] == 1 else p.name for p in paths}
    while True:  # a whole name taken up may clash with a third image's stem: until none clashes
        counts = Counter(names.values())
        clashing = [p for p in paths if counts[names[p]] > 1 and names[p] != p.name]
        if not clashing:
            return names
        names.update({p: p.name for p in clashing})


def map_name(path: Path) -> str:
    """``map_names`` for one image among the images of its folder."""
    return map_names(_images(path.parent) if path.parent.is_dir() else [path]).get(path, path.stem)


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a PNG atomically (temporary file, then rename), with the permissions the umask gives.

    Raises:
        OutputError: the file cannot be written (full disk, read-only folder...); no temporary
            file is left.
    """
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OutputError(f"cannot encode PNG for {path}")
    try:
        with atomic_write(path) as f:
            f.write(buf.tobytes())
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from err


MIN_OBJECT_SHARE = 1e-4
"""A group none of whose maps reaches 0.5 on this share of its image has no common object: a few pixels
(2 of 120,000 in a group of noise images) are no object; the smallest objects of DAVIS and PASCAL cover
0.36% and 1.1% of their frames."""


def group_notes(group: str, images: list[Path], pred: GroupPrediction) -> list[str]:
    """What a group's answer cannot say by itself: a group of one image (nothing to compare), images
    that split into two different objects (:func:`group_agreement`). (No object in any image is said
    once its maps are written, from them.)"""
    notes = []
    if len(images) == 1:
        notes.append(f"group {group!r} has one image ({images[0].name}): with nothing to compare it with, its map "
                     "is the image's own salient object; co-saliency needs two or more images of the object")
    agreement = None if pred.embeddings is None else group_agreement(pred.embeddings)
    if agreement is not None and agreement.uncertain:
        halves = [", ".join(images[i].name for i in half[:3]) + (", ..." if len(half) > 3 else "")
                  for half in agreement.halves]
        notes.append(f"group {group!r} is uncertain: its images look like two different objects "
                     f"({len(agreement.halves[0])} images: {halves[0]}; {len(agreement.halves[1])}: {halves[1]}; "
                     f"similarity across the two {agreement.ratio:.2f} of within), so its maps may follow either or "
                     "both; put each object's images in a group of its own")
    return notes


@dataclass
class FolderReport:
    """What ``segment_folders`` did: maps written per group, every failure with its reason, notes
    (renamed maps), and why it stopped early (a write error, Ctrl-C), if it did."""

    out_dir: Path
    written: dict[str, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # group -> the 3 most probable ImageNet classes of its consensus (what the model took as common)
    consensus: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    input_sizes: dict[str, int] = field(default_factory=dict)  # group -> the engine's input size for it
    stopped: str | None = None
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures and self.stopped is None and not self.interrupted

    @property
    def maps(self) -> int:
        return sum(self.written.values())


def check_outputs(input_dir: Path, out_dir: Path, groups: dict[str, list[Path]]) -> None:
    """Refuse an output folder that is an input folder, or a map that would replace an input file.

    Raises:
        OutputError: naming the folder and what to do.
    """
    inputs = {_real(p) for paths in groups.values() for p in paths}
    input_folders = {_real(input_dir)} | {p.parent for p in inputs}
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir} is a file, not a folder: give a folder for the maps")
    for group, paths in groups.items():
        folder = _real(out_dir / group)
        if folder in input_folders or _real(out_dir) in input_folders:
            inside = _real(out_dir) if _real(out_dir) in input_folders else folder
            raise OutputError(f"--out {out_dir} would write maps into the input folder {inside} (and "
                              "replace images there): give a separate output folder")
        clash = [p for p, name in map_names(paths).items() if (folder / f"{name}.png") in inputs]
        if clash:
            raise OutputError(f"--out {out_dir}: the map of {clash[0]} would replace an input image: "
                              "give a separate output folder")


def _real(path: Path) -> Path:
    """The absolute path with symbolic links followed (looping ones left as they are)."""
    return Path(os.path.realpath(path))


def segment_folders(input_dir: Path, out_dir: Path, engine: CoSalEngine, *, show_progress: bool = True,
                    groups: Collection[str] | None = None) -> FolderReport:
    """Segment every group of ``input_dir`` (or only those named in ``groups``) and write 8-bit maps
    to ``out_dir/<group>/<name>.png`` (``name`` from ``map_names``).

    A bad image is reported and left out of its group; the rest of the group and the other groups
    are still processed. A write error (full disk) or Ctrl-C stops the run; the maps written are
    kept and the report says so.

    Raises:
        OutputError: ``out_dir`` would overwrite the input (checked before any work).
    """
    found = find_groups(input_dir)
    maps_there = _real(out_dir).parent == _real(input_dir)  # --out inside the input folder: no group of its own
    selected = {g: paths for g, paths in found.items() if (groups is None or g in groups)
                and not (maps_there and _real(input_dir / g) == _real(out_dir))}
    check_outputs(input_dir, out_dir, selected)
    report = FolderReport(out_dir, notes=left_out(input_dir, selected))
    total = sum(len(v) for v in selected.values())
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not show_progress) as progress:
        task = progress.add_task("images", total=total)
        try:
            for group, paths in selected.items():
                progress.update(task, description=f"group {escape(group)}")
                _segment_group(input_dir, out_dir, group, paths, engine, report, lambda: progress.advance(task))
        except OutputError as err:
            report.stopped = str(err)
        except KeyboardInterrupt:
            report.interrupted = True
    if report.interrupted:
        raise Interrupted(report)
    return report


def _reduced(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """The image shrunk to at most ``max_side`` a side: the guide of its map's upsampling, kept while the
    group is segmented (a guide of 2S a side gives the same maps as the full photo on PASCAL, and holds
    less memory than the image's network input)."""
    scale = max_side / max(rgb.shape[:2])
    if scale >= 1:
        return rgb
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _segment_group(input_dir: Path, out_dir: Path, group: str, paths: list[Path], engine: CoSalEngine,
                   report: FolderReport, advance: Callable[[], None]) -> None:
    # the group's input size from the files' headers, so that each image is resized as soon as it is read
    input_size = engine.size_for(image_sizes(paths))
    report.input_sizes[group] = input_size
    batch, guides, sizes, kept = [], [], [], []
    for path in paths:
        try:
            rgb, size = read_image(path, max_side=4 * input_size)
        except ImageReadError as err:
            reason = f"{path}: broken symbolic link to {os.readlink(path)}" if path.is_symlink() and not path.exists() \
                else str(err)
            report.failures.append(Failure(path, reason))
            advance()
            continue
        batch.append(engine.prepare(rgb, input_size))
        guides.append(_reduced(rgb, 2 * input_size) if engine.upsampling == "guided" else None)
        sizes.append(size)
        kept.append(path)
    if not kept:
        folder = input_dir / group if group != input_dir.resolve().name else input_dir
        inner = subfolders(folder) if folder != input_dir else []
        reason = (f"group {group!r} has no readable images" if paths else f"group {group!r} has no images"
                  + (f" (its subfolder(s) {', '.join(inner[:3])} are not read: a group's images lie in its own "
                     "folder)" if inner else ""))
        report.failures.append(Failure(folder, reason))
        return
    names = map_names(paths)
    renamed = [p.name for p in kept if names[p] != p.stem]
    if renamed:
        report.notes.append(f"group {group!r}: images share a stem, so their maps keep the suffix: "
                            + ", ".join(f"{n}.png" for n in renamed))
    pred = engine.segment(torch.stack(batch))
    if pred.consensus is not None:
        report.consensus[group] = top_classes(pred.consensus)
    report.notes.extend(group_notes(group, kept, pred))
    report.written[group], largest = 0, 0.0
    for path, size, guide, saliency in zip(kept, sizes, guides, pred.maps):
        prob = resize_map(saliency, size) if guide is None else engine.upsample(saliency, guide, size)
        write_png(out_dir / group / f"{names[path]}.png", to_uint8(prob))
        report.written[group] += 1
        largest = max(largest, float((prob >= 0.5).mean()))
        advance()
    other = sorted(set((out_dir / group).glob("*.png")) - {out_dir / group / f"{names[p]}.png" for p in paths})
    if other:
        report.notes.append(f"group {group!r}: {out_dir / group} also holds {len(other)} map(s) of no image of this "
                            f"group (e.g. {other[0].name}; an earlier run's?): a folder of maps read later is read whole")
    if largest < MIN_OBJECT_SHARE:  # of the maps written, at the images' sizes
        report.notes.append(f"group {group!r}: no common object found (no map reaches 0.5 on {MIN_OBJECT_SHARE:.2%} "
                            f"of its image; the most: {largest:.4%})")
