"""The object-prototype gate (not in the paper): each final map kept where its features resemble
the object the whole group's maps found.

GIM chooses channels by what the group shares in the classifier's eyes, per image; nothing in GICD
compares one image's regions with another image's object. The gate does, after the decoder and
without parameters: each image's map pools its features into a prototype of the object it found,
the prototypes' mean is the group's object, and each map is multiplied by its features' cosine
similarity to that object. A salient object of another class (a spliced-in distractor, a passer-by)
has other features and fades; the common object keeps its map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def prototype_similarity(features: Tensor, pred: Tensor) -> Tensor:
    """Similarity of each position to the group's object prototype: [N,C,h,w], [N,1,H,W] -> [N,1,h,w].

    Each image's prototype is its features averaged with ``pred`` (pooled to h x w) as weights,
    L2-normalised; the group's prototype is the normalised mean of the N prototypes. The map is the
    ReLU of each position's cosine similarity to it, min-max normalised per image to [0, 1]. fp32.
    """
    features = features.float()
    weight = F.adaptive_avg_pool2d(pred.float(), features.shape[2:])
    own = (features * weight).sum((2, 3)) / (weight.sum((2, 3)) + 1e-6)
    group = F.normalize(F.normalize(own, dim=1).mean(0, keepdim=True), dim=1)
    similarity = torch.relu((F.normalize(features, dim=1) * group[:, :, None, None]).sum(1, keepdim=True))
    similarity = similarity - similarity.amin(dim=(2, 3), keepdim=True)
    return similarity / (similarity.amax(dim=(2, 3), keepdim=True) + 1e-6)


def prototype_gate(levels: list[Tensor], pred: Tensor, exponent: float) -> Tensor:
    """pred [N,1,H,W] in [0,1] times (the product of its similarity maps over ``levels``, each
    [N,C_l,h_l,w_l], upsampled to HxW) ** exponent; fp32. The N images are one group (or one
    window or chunk of it): their prototypes are averaged."""
    gate = None
    for features in levels:
        level = F.interpolate(prototype_similarity(features, pred), size=pred.shape[2:], mode="bilinear",
                              align_corners=True)
        gate = level if gate is None else gate * level
    if gate is None:
        raise ValueError("prototype_gate needs at least one feature level")
    return pred.float() * gate ** exponent
