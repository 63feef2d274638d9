"""Jigsaw training data for GICD: jigsaw composites and augmented group batches.

**Grouping** (:mod:`streamcosal.training.manifest`): a dataset's groups, or groups made by the ImageNet
classifier, in a Parquet manifest.

**Jigsaws** (paper, section 3.4). With probability ``jigsaw_prob`` a training sample is joined with
a sample of ANOTHER group, left-right or top-bottom (one half each), the two in random order; the
mask keeps only the target's half (the partner's object is background). The paper resizes both to
SxS, concatenates and resizes back to SxS; we resize each image straight to its half (one
interpolation instead of two, same geometry). Every random choice of a step comes from a numpy
Generator seeded with ``(seed, epoch, step, sample index)``: the same seed gives the same batches.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor

from streamcosal.io.imagefile import read_image, resize
from streamcosal.training.copypaste import CutOut, CutOutError, copy_paste, cut_out, paste_distractors
from streamcosal.training.manifest import ManifestItem, load_pair


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

    copy_paste_prob: probability of a copy-paste composite (:mod:`streamcosal.training.copypaste`: the object
    and one or two foreign objects pasted onto a photo; 0 = none); jigsaw_prob: probability of a
    jigsaw for the other samples (0 = none); copy_paste_native: the share of copy-paste composites
    that keep the object in its own photo and paste only the distractors over it (0.5: being pasted
    says nothing about being the common object); hflip: random horizontal flips;
    crop_scale: smallest area fraction of a random crop (1 = no crop), aspect in [3/4, 4/3];
    colour: strength c of brightness, contrast and saturation factors drawn in [1-c, 1+c] (0 = none);
    sizes: multi-scale training, each step's group at one of these sizes (drawn per step; multiples of
    32, as the engine's input sizes), so the decoder learns more than one scale of the same scene
    (empty = the model's input size);
    instance_groups: the share of steps whose group is one object seen N times instead of a training
    group: a masked image in no training group (the sampler's ``extra``: SOD's photos, classes too
    small to group), its object pasted onto N other photos beside one or two foreign objects (or kept
    in its own photo with them pasted over it, ``copy_paste_native``), each view cropped, flipped and
    coloured apart. The groups hold a few dozen classes; these add common objects of any kind, people
    among them, that no ImageNet class names (0 = none; the other steps' batches stay the same).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    jigsaw_prob: float = Field(0.75, ge=0.0, le=1.0)
    copy_paste_prob: float = Field(0.0, ge=0.0, le=1.0)
    copy_paste_native: float = Field(0.0, ge=0.0, le=1.0)
    hflip: bool = True
    crop_scale: float = Field(0.6, gt=0.0, le=1.0)
    colour: float = Field(0.25, ge=0.0, lt=1.0)
    sizes: list[int] = Field(default_factory=list)
    instance_groups: float = Field(0.0, ge=0.0, le=1.0)

    @field_validator("sizes")
    @classmethod
    def _multiples_of_32(cls, sizes: list[int]) -> list[int]:
        bad = [s for s in sizes if s < 32 or s % 32]
        if bad:
            raise ValueError(f"sizes {bad} are not multiples of 32 (the backbone's stride): use e.g. 224, 256, 288")
        if large := [s for s in sizes if s > 1024]:
            raise ValueError(f"sizes {large} are larger than 1024 ([model] input_size's limit too): use e.g. 224, 256, 288")
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
            raise ValueError("no training group: the data hold none, or every one is held out")
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
        self._instances = np.flatnonzero(self._owner == -1)  # what `instance_groups` draws from

    def epoch_groups(self, epoch: int, steps: int) -> list[str]:
        """The group of each step of an epoch: shuffled passes over all groups, ``steps`` long."""
        rng = np.random.default_rng([self.seed, epoch])
        order: list[str] = []
        while len(order) < steps:
            order += [self.names[i] for i in rng.permutation(len(self.names))]
        return order[:steps]

    def batch(self, group: str, epoch: int, step: int) -> tuple[Tensor, Tensor]:
        """Images [N,3,S,S] float in [0,1] and masks [N,1,S,S] float {0,1}, N = min(max_images, |group|);
        S is the sampler's size, or the step's draw from ``augment.sizes``. In a share
        ``augment.instance_groups`` of the steps, an instance group instead (:meth:`instance_batch`)."""
        if self.augment.instance_groups > 0 and len(self._instances):
            draw = np.random.default_rng([self.seed, epoch, step, INSTANCE_STREAM])
            if draw.random() < self.augment.instance_groups:
                return self.instance_batch(int(draw.choice(self._instances)), epoch, step)
        items = self.groups[group]
        rng = np.random.default_rng([self.seed, epoch, step])
        chosen = rng.choice(len(items), size=min(self.max_images, len(items)), replace=False)
        size = int(rng.choice(self.augment.sizes)) if self.augment.sizes else self.size
        others = np.flatnonzero(self._owner != self.names.index(group))
        pairs = [self.sample(items[i], others, np.random.default_rng([self.seed, epoch, step, k]), size)
                 for k, i in enumerate(chosen)]
        return _stacked(pairs)

    def instance_batch(self, index: int, epoch: int, step: int) -> tuple[Tensor, Tensor]:
        """``max_images`` copy-paste views of the object of ``self._items[index]`` (see ``instance_groups``),
        as :meth:`batch`; an object that cannot be cut out (its mask empty or whole) gives a plain batch of it."""
        item, rng = self._items[index], np.random.default_rng([self.seed, epoch, step])
        size = int(rng.choice(self.augment.sizes)) if self.augment.sizes else self.size
        others = np.flatnonzero(np.arange(len(self._items)) != index)
        rgb, mask = load_pair(item.image, item.mask)
        pairs = []
        for k in range(self.max_images):
            view = np.random.default_rng([self.seed, epoch, step, k])
            try:
                composite, label = self._copy_paste(rgb, mask, item, others, view, size)
            except CutOutError:
                composite, label = resize(rgb, size, size), resize(mask, size, size, nearest=True)
            pairs.append((colour_jitter(composite, self.augment.colour, view), label))
        return _stacked(pairs)

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
INSTANCE_STREAM = 2**32 - 1
"""The last seed word of a step's draw of an instance group (the samples' are 0..max_images - 1): a stream apart."""


def _stacked(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[Tensor, Tensor]:
    """N ([S,S,3] uint8, [S,S] {0,1}) -> images [N,3,S,S] float in [0,1], masks [N,1,S,S] float."""
    x = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).float().div_(255.0)
    y = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None].float()
    return x, y
