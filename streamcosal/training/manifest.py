"""Grouped training manifests.

A dataset in our layout (``<root>/images/<group>/<stem>.jpg`` + ``<root>/masks/...``)
keeps its groups (a video, a class) as they are. A flat dataset (``images/`` and ``masks/`` without
subfolders, e.g. DUTS-TR), or a set asked to be regrouped (``sod``: one folder of unrelated salient
objects), is grouped by the ImageNet classifier of a backbone (the embedded EfficientNet-Lite0 by
default): every image is classified at 224x224 and put in the group of its top-1 class. The rule for
small and noisy groups (:class:`GroupingRule`), in words:

    An image whose top-1 softmax confidence is below ``min_confidence`` (0.3) is dropped: the
    classifier does not know what it shows. A class left with fewer than ``min_group_size`` (4)
    images is dropped whole: too few images for a consensus. Nothing is merged. Given groups are
    never regrouped or dropped by this rule, except a group of one image (no consensus to learn).

Images without a mask are dropped, each with a warning naming it. The result is a
:class:`Manifest` (image, mask, group, class, confidence per row), written to Parquet so that a run
repeats exactly without classifying again.

A mask of another size than its image is resized to it (nearest) with a warning; a non-binary mask
is binarised at ``> 128``; an unreadable file is an error naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from streamcosal.inference.imagenet import imagenet_label
from streamcosal.io.datasets import load_dataset
from streamcosal.io.imagefile import read_image, read_mask, resize
from streamcosal.model import Backbone, build_backbone
from streamcosal.storage.parquet_files import write_atomic

MANIFEST_SCHEMA = pa.schema([
    ("image", pa.string()), ("mask", pa.string()), ("group", pa.string()),
    ("class", pa.int32()), ("confidence", pa.float32()),
])
"""Parquet columns of a manifest; ``class`` is -1 and ``confidence`` NaN for given groups."""
MANIFEST_KEY = "streamcosal.built_from"
"""Parquet metadata key of :attr:`Manifest.built_from` (JSON)."""


@dataclass(frozen=True)
class GroupingRule:
    """Which classifier-made groups survive: see the module docstring."""

    min_confidence: float = 0.3
    min_group_size: int = 4


@dataclass(frozen=True)
class ManifestItem:
    """One training sample: image and mask files, its group, ImageNet class and confidence."""

    image: Path
    mask: Path
    group: str
    cls: int = -1
    confidence: float = float("nan")


@dataclass
class Manifest:
    """Samples in groups, in a fixed order; ``warnings`` lists what was dropped and why.

    ``built_from``: what the manifest was made of (training sets, regrouped sets, grouping rule),
    kept in the Parquet file's metadata so that a config asking for other data is refused.
    """

    items: list[ManifestItem]
    warnings: list[str]
    built_from: dict[str, Any] = field(default_factory=dict)

    def groups(self) -> dict[str, list[ManifestItem]]:
        """Group name -> its items, in manifest order."""
        out: dict[str, list[ManifestItem]] = {}
        for item in self.items:
            out.setdefault(item.group, []).append(item)
        return out

    def write(self, path: Path) -> Path:
        """Write the manifest as Parquet (atomically: temporary file, then rename).

        File paths are stored relative to the manifest's folder, so a manifest committed beside the
        code finds the data wherever the checkout and the data are, as long as they keep their places.
        """
        folder = path.parent.absolute()
        table = pa.table({
            "image": [os.path.relpath(i.image.absolute(), folder) for i in self.items],
            "mask": [os.path.relpath(i.mask.absolute(), folder) for i in self.items],
            "group": [i.group for i in self.items], "class": [i.cls for i in self.items],
            "confidence": [i.confidence for i in self.items],
        }, schema=MANIFEST_SCHEMA.with_metadata({MANIFEST_KEY: json.dumps(self.built_from, sort_keys=True)}))
        write_atomic(table, path)
        return path

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        """Read a manifest written by :meth:`write`; a clear error for another file or missing data.

        Relative paths resolve against the manifest's folder (absolute ones are kept).
        """
        try:
            table = pq.read_table(path)
        except Exception as err:
            raise ValueError(f"cannot read manifest {path}: {err}") from err
        missing = set(MANIFEST_SCHEMA.names) - set(table.column_names)
        if missing:
            raise ValueError(f"{path} is not a jigsaw manifest: columns {sorted(missing)} are missing")
        cols = table.to_pydict()
        folder = path.parent.absolute()

        def where(name: str) -> Path:
            return Path(os.path.normpath(folder / name))
        built_from = json.loads((table.schema.metadata or {}).get(MANIFEST_KEY.encode(), b"{}"))
        items = [ManifestItem(where(im), where(ma), g, int(c), float(cf)) for im, ma, g, c, cf in
                 zip(cols["image"], cols["mask"], cols["group"], cols["class"], cols["confidence"])]
        missing = [p for i in items for p in (i.image, i.mask) if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"manifest {path} lists {len(missing)} file(s) that do not exist, e.g. {missing[0]}: the data "
                "moved or is missing. Put it back, or delete the manifest to group the data again.")
        return cls(items, [], built_from)

    def __add__(self, other: "Manifest") -> "Manifest":
        return Manifest(self.items + other.items, self.warnings + other.warnings)


def file_hash(path: Path) -> str:
    """SHA-1 of a file's bytes: finds the same photo filed under two groups."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


def load_pair(image: Path, mask: Path) -> tuple[np.ndarray, np.ndarray]:
    """Image [H,W,3] uint8 RGB and its mask [H,W] uint8 in {0,1} (:func:`read_mask`'s, binarised at > 128:
    palette and label masks by their values).

    A mask of another size than its image is resized to it (nearest), with a warning naming both.
    """
    rgb = read_image(image)[0]
    gray = read_mask(mask)[0]
    if gray.shape != rgb.shape[:2]:
        warnings.warn(f"mask {mask} is {gray.shape[1]}x{gray.shape[0]} but its image {image} is "
                      f"{rgb.shape[1]}x{rgb.shape[0]}: mask resized (nearest)", stacklevel=2)
        gray = cv2.resize(gray, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
    return rgb, (gray > 128).astype(np.uint8)


@torch.no_grad()
def classify_images(paths: Sequence[Path], backbone: Backbone, *, batch_size: int = 16,
                    input_size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 ImageNet class and softmax confidence of each image: ([N] int, [N] float).

    Each image is resized to input_size x input_size and normalised for the backbone; the logits
    are ``backbone.classify(backbone.features(x)[4])``, on the backbone's device (a training run's is
    the run's: a GPU).
    """
    device = backbone.pixel_mean.device
    classes, confidences = [], []
    for start in range(0, len(paths), batch_size):
        batch = [resize(read_image(p)[0], input_size, input_size) for p in paths[start:start + batch_size]]
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).to(device).float().div(255.0)
        probs = torch.softmax(backbone.classify(backbone.features(backbone.preprocess(x))[4]).float(), dim=1)
        conf, cls = probs.max(dim=1)
        classes.append(cls.cpu().numpy())
        confidences.append(conf.cpu().numpy())
    return np.concatenate(classes).astype(np.int64), np.concatenate(confidences).astype(np.float32)


def class_group_name(cls: int) -> str:
    """Group name of an ImageNet class: ``"207_golden_retriever"``."""
    label = imagenet_label(cls)
    return f"{cls:03d}_{re.sub(r'[^0-9A-Za-z]+', '_', label).strip('_').lower()}"


def build_manifest(root: Path, *, regroup: bool = False, rule: GroupingRule = GroupingRule(),
                   backbone: Backbone | None = None, name: str | None = None) -> Manifest:
    """Index a dataset for training; group names are ``"<name>/<group>"`` (name: the root folder's).

    Given groups are kept; a flat dataset, or any dataset with ``regroup=True``, is grouped by the
    top-1 class of ``backbone``'s classifier (Lite0 by default) under :class:`GroupingRule`.
    """
    dataset = load_dataset(root, layout="ours", name=name)
    notes = list(dataset.warnings)
    samples = []
    for sample in dataset.samples():
        if sample.mask is None:
            notes.append(f"{dataset.name}/{sample.key}: no mask in {dataset.mask_dir}: image dropped")
        else:
            samples.append(sample)
    if not (regroup or dataset.flat):
        by_group: dict[str, list[ManifestItem]] = {}
        for s in samples:
            by_group.setdefault(s.group, []).append(ManifestItem(s.image, s.mask, f"{dataset.name}/{s.group}"))  # type: ignore[arg-type]
        for group, items in list(by_group.items()):
            if len(items) < 2:
                notes.append(f"{dataset.name}/{group}: a group of one image has no consensus to learn: dropped")
                del by_group[group]
        items = [item for group_items in by_group.values() for item in group_items]
    else:
        backbone = backbone if backbone is not None else build_backbone("efficientnet_lite0")
        classes, confidences = classify_images([s.image for s in samples], backbone)
        confident = [(s, int(c), float(p)) for s, c, p in zip(samples, classes, confidences)]
        unsure = [s for s, _, p in confident if p < rule.min_confidence]
        if unsure:
            notes.append(f"{dataset.name}: {len(unsure)} image(s) with classifier confidence < "
                         f"{rule.min_confidence} dropped")
        counts: dict[int, int] = {}
        for _, c, p in confident:
            if p >= rule.min_confidence:
                counts[c] = counts.get(c, 0) + 1
        small = sorted(c for c, n in counts.items() if n < rule.min_group_size)
        if small:
            notes.append(f"{dataset.name}: {len(small)} class(es) with fewer than {rule.min_group_size} "
                         f"confident images dropped ({sum(counts[c] for c in small)} image(s))")
        items = sorted(
            (ManifestItem(s.image, s.mask, f"{dataset.name}/{class_group_name(c)}", c, p)  # type: ignore[arg-type]
             for s, c, p in confident if p >= rule.min_confidence and c not in small),
            key=lambda i: (i.group, i.image.name))
    for note in notes:
        warnings.warn(note, stacklevel=2)
    if not items:
        raise ValueError(f"no usable training image in {root}: {'; '.join(notes) or 'empty dataset'}")
    return Manifest(items, notes)
