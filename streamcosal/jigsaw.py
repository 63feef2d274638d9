"""Jigsaw training data for GICD: grouped manifests, jigsaw composites, augmented group batches.

**Grouping.** A dataset in our layout (``<root>/images/<group>/<stem>.jpg`` + ``<root>/masks/...``)
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

**Jigsaws** (paper, section 3.4). With probability ``jigsaw_prob`` a training sample is joined with
a sample of ANOTHER group, left-right or top-bottom (one half each), the two in random order; the
mask keeps only the target's half (the partner's object is background). The paper resizes both to
SxS, concatenates and resizes back to SxS; we resize each image straight to its half (one
interpolation instead of two, same geometry). Every random choice of a step comes from a numpy
Generator seeded with ``(seed, epoch, step, sample index)``: the same seed gives the same batches.

**Bad data.** A mask of another size than its image is resized to it (nearest) with a warning; a
non-binary mask is binarised at ``> 128``; an unreadable file is an error naming it.
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
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor

from .copypaste import CutOut, CutOutError, copy_paste, cut_out, paste_distractors
from .datasets import load_dataset
from .imagefile import read_gray, read_image, resize
from .imagenet import imagenet_label
from .model import Backbone, build_backbone
from .storage.parquet_files import write_atomic

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
    """Image [H,W,3] uint8 RGB and its mask [H,W] uint8 in {0,1} (binarised at > 128).

    A mask of another size than its image is resized to it (nearest), with a warning naming both.
    """
    rgb = read_image(image)[0]
    gray = read_gray(mask)
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
    are ``backbone.classify(backbone.features(x)[4])``.
    """
    classes, confidences = [], []
    for start in range(0, len(paths), batch_size):
        batch = [resize(read_image(p)[0], input_size, input_size) for p in paths[start:start + batch_size]]
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div(255.0)
        probs = torch.softmax(backbone.classify(backbone.features(backbone.preprocess(x))[4]).float(), dim=1)
        conf, cls = probs.max(dim=1)
        classes.append(cls.numpy())
        confidences.append(conf.numpy())
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


def jigsaw(target: np.ndarray, target_mask: np.ndarray, partner: np.ndarray, size: int,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Join a target with a partner of another group into one SxS image.

    target: [H,W,3] uint8, target_mask: [H,W] {0,1}, partner: [H',W',3] uint8 ->
    ([S,S,3] uint8, [S,S] {0,1}). Left-right or top-bottom with probability 0.5 each, the target
    first or second with probability 0.5 each; the mask is the target's mask in the target's half
    (resized, nearest) and 0 in the partner's half.
    """
    horizontal = bool(rng.random() < 0.5)
    target_first = bool(rng.random() < 0.5)
    first, second = size // 2, size - size // 2
    t_len, p_len = (first, second) if target_first else (second, first)
    if horizontal:
        t_img, t_mask = resize(target, t_len, size), resize(target_mask, t_len, size, nearest=True)
        p_img, p_mask = resize(partner, p_len, size), np.zeros((size, p_len), np.uint8)
        axis = 1
    else:
        t_img, t_mask = resize(target, size, t_len), resize(target_mask, size, t_len, nearest=True)
        p_img, p_mask = resize(partner, size, p_len), np.zeros((p_len, size), np.uint8)
        axis = 0
    imgs, masks = ((t_img, p_img), (t_mask, p_mask)) if target_first else ((p_img, t_img), (p_mask, t_mask))
    return np.concatenate(imgs, axis=axis), np.concatenate(masks, axis=axis)


class Augmentation(BaseModel):
    """Per-sample augmentation of training images (jigsaws, flips, scale/crop, colour).

    copy_paste_prob: probability of a copy-paste composite (:mod:`streamcosal.copypaste`: the object
    and one or two foreign objects pasted onto a photo; 0 = none); jigsaw_prob: probability of a
    jigsaw for the other samples (0 = none); copy_paste_native: the share of copy-paste composites
    that keep the object in its own photo and paste only the distractors over it (0.5: being pasted
    says nothing about being the common object); hflip: random horizontal flips;
    crop_scale: smallest area fraction of a random crop (1 = no crop), aspect in [3/4, 4/3];
    colour: strength c of brightness, contrast and saturation factors drawn in [1-c, 1+c] (0 = none);
    sizes: multi-scale training, each step's group at one of these sizes (drawn per step; multiples of
    32, as the engine's input sizes), so the decoder learns more than one scale of the same scene
    (empty = the model's input size).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    jigsaw_prob: float = Field(0.75, ge=0.0, le=1.0)
    copy_paste_prob: float = Field(0.0, ge=0.0, le=1.0)
    copy_paste_native: float = Field(0.0, ge=0.0, le=1.0)
    hflip: bool = True
    crop_scale: float = Field(0.6, gt=0.0, le=1.0)
    colour: float = Field(0.25, ge=0.0, lt=1.0)
    sizes: list[int] = Field(default_factory=list)

    @field_validator("sizes")
    @classmethod
    def _multiples_of_32(cls, sizes: list[int]) -> list[int]:
        bad = [s for s in sizes if s < 32 or s % 32]
        if bad:
            raise ValueError(f"sizes {bad} are not multiples of 32 (the backbone's stride): use e.g. 224, 256, 288")
        return sizes


def random_crop(rgb: np.ndarray, mask: np.ndarray, min_scale: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A crop of area fraction in [min_scale, 1] and aspect ratio in [3/4, 4/3] at a random place."""
    if min_scale >= 1.0:
        return rgb, mask
    h, w = mask.shape
    area = rng.uniform(min_scale, 1.0)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw = int(round(min(w, w * np.sqrt(area * aspect))))
    ch = int(round(min(h, h * np.sqrt(area / aspect))))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    return rgb[y0:y0 + ch, x0:x0 + cw], mask[y0:y0 + ch, x0:x0 + cw]


def colour_jitter(rgb: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation factors in [1-strength, 1+strength]: uint8 in, uint8 out."""
    if strength <= 0:
        return rgb
    b, c, s = rng.uniform(1 - strength, 1 + strength, size=3)
    x = rgb.astype(np.float32) * b
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = (x - grey.mean()) * c + grey.mean()
    grey = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    x = (x - grey) * s + grey
    return np.clip(x, 0, 255).astype(np.uint8)


class GroupSampler:
    """Training batches: one group per step, at most ``max_images`` of it, augmented, seeded.

    ``groups``: group name -> items (at least two groups when ``augment.jigsaw_prob > 0``).
    ``extra``: images with masks in no training group (classes too small to group, say), used only
    as jigsaw partners, distractors and backgrounds of other groups' samples.
    """

    def __init__(self, groups: dict[str, list[ManifestItem]], *, size: int, max_images: int,
                 augment: Augmentation, seed: int, extra: Sequence[ManifestItem] = ()) -> None:
        if not groups:
            raise ValueError("no training group: the manifest is empty")
        if augment.jigsaw_prob > 0 and len(groups) < 2:
            raise ValueError(f"jigsaw_prob = {augment.jigsaw_prob} needs at least two groups to draw "
                             f"partners from, but the training data has only {', '.join(groups)}: add a "
                             "dataset or set jigsaw_prob = 0")
        self.groups = groups
        self.names = sorted(groups)
        self.size, self.max_images, self.augment, self.seed = size, max_images, augment, seed
        everything = [(self.names.index(name), item) for name in self.names for item in groups[name]]
        everything += [(-1, item) for item in extra]
        self._items = [item for _, item in everything]
        self._owner = np.array([owner for owner, _ in everything])

    def epoch_groups(self, epoch: int, steps: int) -> list[str]:
        """The group of each step of an epoch: shuffled passes over all groups, ``steps`` long."""
        rng = np.random.default_rng([self.seed, epoch])
        order: list[str] = []
        while len(order) < steps:
            order += [self.names[i] for i in rng.permutation(len(self.names))]
        return order[:steps]

    def batch(self, group: str, epoch: int, step: int) -> tuple[Tensor, Tensor]:
        """Images [N,3,S,S] float in [0,1] and masks [N,1,S,S] float {0,1}, N = min(max_images, |group|);
        S is the sampler's size, or the step's draw from ``augment.sizes``."""
        items = self.groups[group]
        rng = np.random.default_rng([self.seed, epoch, step])
        chosen = rng.choice(len(items), size=min(self.max_images, len(items)), replace=False)
        size = int(rng.choice(self.augment.sizes)) if self.augment.sizes else self.size
        others = np.flatnonzero(self._owner != self.names.index(group))
        pairs = [self.sample(items[i], others, np.random.default_rng([self.seed, epoch, step, k]), size)
                 for k, i in enumerate(chosen)]
        x = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).float().div_(255.0)
        y = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None].float()
        return x, y

    def sample(self, item: ManifestItem, others: np.ndarray, rng: np.random.Generator,
               size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One augmented sample: ([S,S,3] uint8, [S,S] {0,1}), S = ``size`` or the sampler's; partners
        come from ``others``."""
        aug, s = self.augment, size or self.size
        rgb, mask = load_pair(item.image, item.mask)
        if aug.copy_paste_prob > 0 and rng.random() < aug.copy_paste_prob:
            try:
                composite, label = self._copy_paste(rgb, mask, item, others, rng, s)
                return colour_jitter(composite, aug.colour, rng), label
            except CutOutError as err:
                warnings.warn(f"{err}: a jigsaw or plain sample instead of a copy-paste composite", stacklevel=2)
        rgb, mask = random_crop(rgb, mask, aug.crop_scale, rng)
        if aug.hflip and rng.random() < 0.5:
            rgb, mask = rgb[:, ::-1], mask[:, ::-1]
        if aug.jigsaw_prob > 0 and rng.random() < aug.jigsaw_prob:
            partner, _ = read_image(self._items[int(rng.choice(others))].image)
            if aug.hflip and rng.random() < 0.5:
                partner = partner[:, ::-1]
            rgb, mask = jigsaw(np.ascontiguousarray(rgb), np.ascontiguousarray(mask),
                               np.ascontiguousarray(partner), s, rng)
        else:
            rgb, mask = resize(np.ascontiguousarray(rgb), s, s), resize(np.ascontiguousarray(mask), s, s, nearest=True)
        return colour_jitter(rgb, aug.colour, rng), mask

    def _copy_paste(self, rgb: np.ndarray, mask: np.ndarray, item: ManifestItem, others: np.ndarray,
                    rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        """A copy-paste composite of ``item``'s object and one or two distractors from ``others``
        (items of other groups): the object pasted onto another group's photo or, with probability
        ``copy_paste_native``, the distractors pasted over the object's own photo."""
        target = cut_out(rgb, mask, str(item.mask))
        native = self.augment.copy_paste_native > 0 and bool(rng.random() < self.augment.copy_paste_native)
        if native:
            cropped = random_crop(rgb, mask, self.augment.crop_scale, rng)
            rgb, mask = cropped if cropped[1].any() else (rgb, mask)  # a crop that misses the object: the whole photo
        if self.augment.hflip and rng.random() < 0.5:
            target, rgb, mask = CutOut(target.rgb[:, ::-1], target.mask[:, ::-1]), rgb[:, ::-1], mask[:, ::-1]
        distractors: list[CutOut] = []
        for _ in range(int(rng.integers(1, 3))):
            for _attempt in range(MAX_DRAWS):
                other = self._items[int(rng.choice(others))]
                try:
                    distractors.append(cut_out(*load_pair(other.image, other.mask), str(other.mask)))
                    break
                except CutOutError:
                    continue
        if native:
            return paste_distractors(rgb, mask, distractors, size, rng)
        background, _ = read_image(self._items[int(rng.choice(others))].image)
        return copy_paste(target, distractors, background, size, rng)


MAX_DRAWS = 5
"""Draws of a distractor before giving up on it (its mask empty or full each time)."""
