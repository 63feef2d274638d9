"""Co-SOD datasets as they lie on disk: groups of images paired with ground-truth masks.

A dataset root holds an image folder and a mask folder, each with one subfolder per group
(``<root>/<image_dir>/<group>/<stem>.jpg`` and ``<root>/<mask_dir>/<group>/<stem>.png``); images
and masks pair by stem. The folder names depend on where the dataset comes from:

- ``ours``: ``images/`` + ``masks/``: streamcosal's own sets (``shared/data/*``).
- ``coca``: ``image/`` + ``binary/``: CoCA as released by the GICD authors.
- ``cosal2015``, ``cosod3k``: ``Image/`` + ``GroundTruth/``: CoSal2015, CoSOD3k.
- ``icoseg``, ``msrc``: ``Image/`` + ``GroundTruth/`` as packed in the Co-SOD benchmark releases
  (GICD, GCoNet), or ``images/`` + ``groundtruth/`` as in several per-dataset downloads. This is
  an assumption: for any other pair, rename the folders or build a :class:`CoSODDataset` directly.
- ``img_gt``: ``img/`` + ``gt/`` (the Co-SOD toolboxes' COCO9213 and their kin), ``images/`` + ``gts/``.

Folder names match in any case where no folder has the exact name (``image/`` unpacked as ``Image/``).
With ``layout=None`` the first pair found, in the order of this list, is used.

Benchmark packs hold several datasets in two trees (:data:`BENCHMARK_TREES`):
``<top>/images/<dataset>/<group>/<stem>.jpg`` and ``<top>/gts/<dataset>/<group>/<stem>.png``, e.g. CoCA,
CoSal2015 and CoSOD3k side by side. A dataset of such a pack is given by either of its two folders
(``<top>/gts/CoCA`` or ``<top>/images/CoCA``), or by ``<top>`` where it holds one dataset. An image folder
without group subfolders (a *flat* folder) is one group named after the dataset. Images and masks are the
files ending in :data:`streamcosal.io.imagefile.IMAGE_SUFFIXES` in any case (read with that module's one
reader, EXIF orientation applied); a mask is looked up by stem with ``.png`` preferred. An image without a
mask is kept with ``mask=None`` and listed by :attr:`CoSODDataset.missing_masks`; it is never dropped
silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from streamcosal.io.imagefile import IMAGE_SUFFIXES, subfolders

LAYOUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "ours": (("images", "masks"),),
    "coca": (("image", "binary"),),
    "cosal2015": (("Image", "GroundTruth"),),
    "cosod3k": (("Image", "GroundTruth"),),
    "icoseg": (("Image", "GroundTruth"), ("images", "groundtruth")),
    "msrc": (("Image", "GroundTruth"), ("images", "groundtruth")),
    "img_gt": (("img", "gt"), ("images", "gts")),
}
"""Layout name -> the (image folder, mask folder) pairs it may use, tried in order."""
BENCHMARK_TREES = (("images", "gts"), ("img", "gt"), ("Image", "GroundTruth"), ("images", "masks"))
"""(image tree, mask tree) of benchmark packs: <top>/<image tree>/<dataset>/<group>/ beside
<top>/<mask tree>/<dataset>/<group>/."""


@dataclass(frozen=True)
class Sample:
    """One image of a group and its ground-truth mask (``None`` when the mask file is missing)."""

    group: str
    stem: str
    image: Path
    mask: Path | None

    @property
    def key(self) -> str:
        """``"<group>/<stem>"``: how reports name this sample."""
        return f"{self.group}/{self.stem}"


@dataclass
class CoSODDataset:
    """A Co-SOD dataset: named groups of :class:`Sample`, sorted by group then stem.

    ``flat`` is true when the images lie directly in ``image_dir`` (one group named ``name``).
    ``warnings`` lists what loading noticed but could recover from (e.g. two images sharing a stem).
    """

    name: str
    root: Path
    image_dir: Path
    mask_dir: Path
    groups: dict[str, list[Sample]]
    flat: bool = False
    warnings: list[str] = field(default_factory=list)

    def samples(self) -> Iterator[Sample]:
        """All samples, group by group."""
        for samples in self.groups.values():
            yield from samples

    @property
    def n_images(self) -> int:
        """Number of images, with or without a mask."""
        return sum(len(samples) for samples in self.groups.values())

    @property
    def missing_masks(self) -> list[Sample]:
        """Samples whose mask file was not found."""
        return [sample for sample in self.samples() if sample.mask is None]


def detect_layout(root: Path | str) -> tuple[str, str, str]:
    """Find the layout of a dataset root.

    Returns:
        ``(layout, image folder name, mask folder name)`` for the first pair of ``LAYOUTS`` whose
        two folders both exist directly under ``root`` (by exact name, else in any case).

    Raises:
        FileNotFoundError: ``root`` is not a folder, or holds none of the known folder pairs.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist or is not a folder")
    present = subfolders(root)
    for layout, pairs in LAYOUTS.items():
        for image_name, mask_name in pairs:
            image, mask = named_alike(present, image_name), named_alike(present, mask_name)
            if image and mask:
                return layout, image, mask
    known = ", ".join(sorted({f"{i}/ + {m}/" for pairs in LAYOUTS.values() for i, m in pairs}))
    held = f"folders {present}" if present else "no folders (one group's images or masks?)"
    raise FileNotFoundError(
        f"cannot tell the layout of dataset {root}: it has {held}, expected one of these image/mask folder "
        f"pairs: {known}. Give the dataset's root as --gt or --data (a flow's datasets): the folder holding the "
        "image and mask folders."
    )


def load_dataset(root: Path | str, *, layout: str | None = None, name: str | None = None) -> CoSODDataset:
    """Index a Co-SOD dataset on disk (no image is read).

    Args:
        root: the dataset folder, holding an image folder and a mask folder, or a dataset of a benchmark pack
            (see module docstring).
        layout: one of ``LAYOUTS`` (``"ours"``, ``"coca"``, ``"cosal2015"``, ``"cosod3k"``,
            ``"icoseg"``, ``"msrc"``, ``"img_gt"``), or ``None`` to detect it (benchmark packs included).
        name: the dataset's name in reports; defaults to the dataset's folder name.

    Raises:
        FileNotFoundError: the root or the layout's folders are missing, a pack holds several datasets,
            or no image was found.
        ValueError: unknown layout name.
    """
    root = Path(root)
    if layout is None:
        image_dir, mask_dir, found_name = _dataset_folders(root)
    else:
        image_name, mask_name = _named_layout_folders(root, layout)
        image_dir, mask_dir, found_name = root / image_name, root / mask_name, _name(root)
    name = name or found_name
    warnings: list[str] = []

    group_dirs = [image_dir / d for d in subfolders(image_dir)]
    loose_images = _image_files(image_dir)
    flat = not group_dirs
    if flat:
        groups = {name: _group_samples(name, image_dir, mask_dir, warnings)}
    else:
        if loose_images:
            warnings.append(
                f"{len(loose_images)} image(s) lie directly in {image_dir} beside group folders "
                "and were ignored: move them into a group folder"
            )
        mask_groups = subfolders(mask_dir)
        groups = {d.name: _group_samples(d.name, d, mask_dir / (named_alike(mask_groups, d.name) or d.name), warnings)
                  for d in group_dirs}
        unpaired = sorted(set(mask_groups) - {named_alike(mask_groups, d.name) for d in group_dirs})
        if unpaired:
            warnings.append(f"mask folder(s) without an image folder of the same name were ignored: "
                            f"{', '.join(unpaired)} (in {mask_dir})")
        empty = [group for group, samples in groups.items() if not samples]
        if empty:
            warnings.append(f"group folder(s) without any image were ignored: {', '.join(empty)}")
        groups = {group: samples for group, samples in groups.items() if samples}
    if not any(groups.values()):
        raise FileNotFoundError(
            f"no image ({'/'.join(IMAGE_SUFFIXES[:7])} or another format Pillow reads) found in {image_dir} or "
            "its group folders"
        )
    return CoSODDataset(name, root, image_dir, mask_dir, groups, flat=flat, warnings=warnings)


def _dataset_folders(root: Path) -> tuple[Path, Path, str]:
    """The image folder, mask folder and name of the dataset at ``root``: a dataset root, a dataset folder
    of a benchmark pack (``<top>/gts/CoCA``), or a pack (``<top>``) that holds one dataset."""
    try:
        _, image_name, mask_name = detect_layout(root)
    except FileNotFoundError:
        member = _pack_member(root)
        if member is None:
            raise
        return member
    image_dir, mask_dir = root / image_name, root / mask_name
    if _holds_datasets(image_dir):
        # a pack's datasets hold group folders on both sides (a dataset's groups with subfolders are no pack)
        datasets = [d for d in subfolders(image_dir) if subfolders(mask_dir / d)]
        if len(datasets) == 1:
            return image_dir / datasets[0], mask_dir / datasets[0], datasets[0]
        if datasets:
            raise FileNotFoundError(f"{root} is a benchmark pack of {len(datasets)} datasets "
                                    f"({', '.join(datasets)}): give one of them, e.g. {mask_dir / datasets[0]}")
    return image_dir, mask_dir, _name(root)


def _pack_member(folder: Path) -> tuple[Path, Path, str] | None:
    """``folder`` as one dataset of a benchmark pack, given by its image or its mask folder
    (``<top>/images/CoCA`` or ``<top>/gts/CoCA``): (image folder, mask folder, name), or None."""
    folder = Path(os.path.abspath(folder))
    tree, top = folder.parent, folder.parent.parent
    if tree == top or not folder.is_dir():
        return None
    present = subfolders(top)
    for image_tree, mask_tree in BENCHMARK_TREES:
        if tree.name.lower() not in (image_tree.lower(), mask_tree.lower()):
            continue
        image, mask = named_alike(present, image_tree), named_alike(present, mask_tree)
        if image and mask and (top / image / folder.name).is_dir() and (top / mask / folder.name).is_dir():
            return top / image / folder.name, top / mask / folder.name, folder.name
    return None


def _holds_datasets(image_dir: Path) -> bool:
    """Whether ``image_dir``'s subfolders are datasets (folders of group folders), not groups."""
    folders = [image_dir / d for d in subfolders(image_dir)]
    return bool(folders) and not any(_image_files(d) for d in folders) and any(subfolders(d) for d in folders)


def _name(folder: Path) -> str:
    """A folder's name as given (a symbolic link's own, not its target's), also for ``.`` and ``..``."""
    return Path(os.path.abspath(folder)).name


def named_alike(present: list[str], name: str) -> str | None:
    """``name`` among the folder names ``present``: itself, else the one that differs from it in case only."""
    if name in present:
        return name
    alike = [p for p in present if p.lower() == name.lower()]
    return alike[0] if len(alike) == 1 else None


def index_images(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """Map stem -> image file for the images directly in ``folder`` (empty if it does not exist).

    Returns:
        ``(index, duplicates)``: when several files share a stem the first ending of
        ``IMAGE_SUFFIXES`` wins and the others are listed in ``duplicates``.
    """
    index: dict[str, Path] = {}
    duplicates: list[str] = []
    rank = {ext: i for i, ext in enumerate(IMAGE_SUFFIXES)}
    for path in sorted(_image_files(folder), key=lambda p: (p.stem, rank[p.suffix.lower()])):
        if path.stem in index:
            duplicates.append(path.name)
        else:
            index[path.stem] = path
    return index, duplicates


def _named_layout_folders(root: Path, layout: str) -> tuple[str, str]:
    """The (image, mask) folder names of a named layout that exist under ``root``."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown dataset layout {layout!r}: use one of {sorted(LAYOUTS)} or None to detect it")
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist or is not a folder")
    present = subfolders(root)
    for image_name, mask_name in LAYOUTS[layout]:
        image, mask = named_alike(present, image_name), named_alike(present, mask_name)
        if image and mask:
            return image, mask
    expected = " or ".join(f"{root / i}/ and {root / m}/" for i, m in LAYOUTS[layout])
    raise FileNotFoundError(f"dataset {root} is not in layout {layout!r}: expected {expected}")


def _image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (hidden files skipped); empty if it is not a folder."""
    if not folder.is_dir():
        return []
    return [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    ]


def _group_samples(group: str, image_dir: Path, mask_dir: Path, warnings: list[str]) -> list[Sample]:
    """Pair the images of one group folder with the masks of its mask folder, by stem."""
    images, duplicate_images = index_images(image_dir)
    masks, duplicate_masks = index_images(mask_dir)
    for kind, duplicates in (("image", duplicate_images), ("mask", duplicate_masks)):
        if duplicates:
            warnings.append(
                f"group {group!r}: {len(duplicates)} {kind} file(s) share a stem with another and were "
                f"ignored ({', '.join(duplicates[:3])}{', ...' if len(duplicates) > 3 else ''})"
            )
    if images and not mask_dir.is_dir():
        warnings.append(f"group {group!r}: mask folder {mask_dir} does not exist")
    alone = sorted(path.name for stem, path in masks.items() if stem not in images)
    if images and alone:
        warnings.append(f"group {group!r}: {len(alone)} mask(s) have no image in {image_dir} and are not used "
                        f"({', '.join(alone[:3])}{', ...' if len(alone) > 3 else ''})")
    return [Sample(group, stem, path, masks.get(stem)) for stem, path in sorted(images.items())]
