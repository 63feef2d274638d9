"""The object-prototype gate (not in the paper): each final map kept where its features resemble
the object the group's maps found.

GIM chooses channels by what the group shares in the classifier's eyes, per image; nothing in GICD
compares one image's regions with another image's object. The gate does, after the decoder and
without parameters: each image's map pools its features into a prototype of the object it found,
the prototypes' mean is the group's object, and each map is multiplied by its features' cosine
similarity to that object. A salient object of another class (a spliced-in distractor, a passer-by)
has other features and fades; the common object keeps its map.

The group's prototype can include images segmented before (earlier windows of a video): their
prototypes' sum is the ``prior``, so that a window of one frame is compared with the whole stream's
object rather than with itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .gim import segment_index, spatial_min_max


def object_prototypes(levels: list[Tensor], pred: Tensor) -> list[Tensor]:
    """Each image's object prototype per level: [N,C_l,h_l,w_l] features, pred [N,1,H,W] in [0,1]
    -> [N,C_l] per level, L2-normalised; the features averaged with ``pred`` (pooled to h_l x w_l)
    as weights. fp32."""
    out = []
    for features in levels:
        weight = F.adaptive_avg_pool2d(pred.float(), features.shape[2:])
        own = (features.float() * weight).sum((2, 3)) / (weight.sum((2, 3)) + 1e-6)
        out.append(F.normalize(own, dim=1))
    return out


def group_prototypes(own: list[Tensor], prior: list[Tensor] | None = None,
                     segments: Sequence[int] | None = None) -> list[Tensor]:
    """The group's object per level: the normalised sum of the images' prototypes ([N,C_l] each)
    and of ``prior`` ([1,C_l] each: the summed prototypes of images segmented before) -> [1,C_l].

    ``segments``: the images are several groups of these sizes, one after another, and ``prior`` is
    [S,C_l] (one row per group): each image gets its own group's object, [N,C_l]."""
    if prior is not None and len(prior) != len(own):
        raise ValueError(f"prototype prior has {len(prior)} levels, the model {len(own)}")
    if segments is None:
        return [F.normalize(p.sum(0, keepdim=True) + (0 if prior is None else prior[k].to(p)), dim=1)
                for k, p in enumerate(own)]
    index = segment_index(segments, own[0].device)
    sums = [torch.zeros(len(segments), p.shape[1], device=p.device, dtype=p.dtype).index_add_(0, index, p)
            for p in own]
    return [F.normalize(s + (0 if prior is None else prior[k].to(s)), dim=1)[index] for k, s in enumerate(sums)]


def prototype_similarity(features: Tensor, group: Tensor) -> Tensor:
    """Each position's similarity to the group's object: [N,C,h,w], [1,C] (or [N,C], each image's) -> [N,1,h,w] in [0,1]:
    the ReLU of the cosine similarity, min-max normalised per image. fp32."""
    cosine = (F.normalize(features.float(), dim=1) * group[:, :, None, None]).sum(1, keepdim=True)
    return spatial_min_max(torch.relu(cosine))


def prototype_gate(levels: list[Tensor], groups: list[Tensor], pred: Tensor, exponent: float) -> Tensor:
    """pred [N,1,H,W] in [0,1] times (the product over ``levels`` ([N,C_l,h_l,w_l]) of their
    similarity maps to ``groups`` ([1,C_l] or [N,C_l], :func:`group_prototypes`), upsampled to HxW) ** exponent;
    fp32."""
    if not levels or len(levels) != len(groups):
        raise ValueError(f"prototype_gate needs one group prototype per feature level, got {len(groups)} "
                         f"for {len(levels)}")
    gate = None
    for features, group in zip(levels, groups):
        level = F.interpolate(prototype_similarity(features, group), size=pred.shape[2:], mode="bilinear",
                              align_corners=True)
        gate = level if gate is None else gate * level
    return pred.float() * gate ** exponent
