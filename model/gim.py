"""GIM, the gradient-induced module: consensus, per-channel weights from the gradient, the CAM.

All of it runs in fp32, whatever precision the backbone and decoder use.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .backbones import Backbone
from .cooccurrence import common_region_embedding
from .head import HeadPass


def consensus_from_logits(logits: Tensor) -> Tensor:
    """Group consensus: the logits summed over the group, then one softmax. [N,1000] -> [1,1000]."""
    return torch.softmax(logits.float().sum(0, keepdim=True), dim=1)


IMAGENET_CLASSES = 1000


def group_consensus(consensus: Tensor | np.ndarray) -> Tensor:
    """A given consensus as [1,1000] (a [1000] vector, or an array: ``GroupPrediction.consensus`` is one)."""
    given = torch.as_tensor(consensus) if isinstance(consensus, np.ndarray) else consensus
    if not isinstance(given, Tensor):
        raise TypeError(f"consensus must be a tensor or an array [1,{IMAGENET_CLASSES}], or a function of the "
                        f"group's logits, got {type(consensus).__name__}")
    given = given[None] if given.ndim == 1 else given
    if tuple(given.shape) != (1, IMAGENET_CLASSES):
        raise ValueError(f"consensus must be one for the group, [1,{IMAGENET_CLASSES}] (consensus_from_logits of "
                         f"the images' logits), got shape {tuple(given.shape)}")
    return given


def segment_index(segments: Sequence[int], device: torch.device) -> Tensor:
    """Each image's group, for images of several groups one after another: sizes [n_0, n_1, ...] ->
    [0]*n_0 + [1]*n_1 + ..., a long tensor on ``device``."""
    return torch.repeat_interleave(torch.arange(len(segments), device=device), torch.tensor(segments, device=device))


def segment_bounds(segments: Sequence[int]) -> list[tuple[int, int]]:
    """Each group's images as (start, end), for groups of these sizes one after another."""
    return list(itertools.pairwise([0, *itertools.accumulate(segments)]))


@dataclass
class GIMOutput:
    """induced: F~5 = F5 * w, [N,C5,h,w]; weights: w, [N,C5] in [0,1]; similarity: [N]."""

    induced: Tensor
    weights: Tensor
    similarity: Tensor


def gradient_induced_weights(backbone: Backbone, f5: Tensor, consensus: Tensor, embedding_share: float = 0.0,
                             head: HeadPass | None = None, segments: Sequence[int] | None = None) -> GIMOutput:
    """Channel weights from d(consensus . own logits)/dF5, through the classifier head only.

    f5: [N,C5,h,w] (any dtype; used in fp32), consensus: [1,1000], or [N,1000] one per image (no gradient);
    head: the backbone's :meth:`~model.backbones.Backbone.head_pass` of f5 when the caller has it (the
    consensus and the object-prototype gate read the same pass); segments: the sizes of the groups f5
    holds one after another (None: one group), whose shared regions are each group's own.
    w = ReLU(spatial mean of the gradient), min-max normalised over each image's C5 values.
    No parameter receives a gradient, and the head's images do not interact, so each image's
    gradient is its own.

    ``embedding_share`` > 0 (not in the paper; 0 is GICD's GIM) mixes in the same weights for the
    embedding consensus: d(e_common . own e)/dF5, e the classifier's input (:meth:`Backbone.embed`,
    [N,D]) and e_common the embedding of the regions the N images given (the group, window or chunk)
    share (:func:`~model.cooccurrence.common_region_embedding`). A consensus class names one of
    ImageNet's 1,000; the shared regions' embedding also holds what a group of mixed classes (75 dogs
    of many breeds) or of no class (people) has in common. w = normalised((1 - share) w_class +
    share w_embedding).

    Both gradients pass through the embedding: d(consensus . logits)/de is the class consensus as a
    direction in embedding space (:meth:`~model.head.HeadPass.class_direction`), and the head's pass
    gives the spatial mean of d(v . e)/dF5 for each direction v.
    """
    head = head if head is not None else backbone.head_pass(f5)
    with torch.autocast(f5.device.type, enabled=False):  # its products in fp32 too (fp16's min-max: 0/0 = NaN)
        consensus = consensus.detach().float()
        directions = [head.class_direction(consensus)]
        if embedding_share > 0:
            directions.append(torch.cat([common_region_embedding(head.features[a:b], head.embedding[a:b]).expand(
                b - a, -1) for a, b in segment_bounds(segments or [f5.shape[0]])]))
        grads = head.gradient_means(torch.stack(directions))
        w = _min_max(torch.relu(grads[0]))
        if embedding_share > 0:
            w = _min_max((1 - embedding_share) * w + embedding_share * _min_max(torch.relu(grads[1])))
        induced = f5.float() * w[:, :, None, None]
        return GIMOutput(induced=induced, weights=w, similarity=(consensus * head.logits).sum(1))


def _min_max(w: Tensor) -> Tensor:
    """[N,C] -> [N,C], min-max normalised over each image's C values."""
    w_min = w.min(dim=1, keepdim=True).values
    w_max = w.max(dim=1, keepdim=True).values
    return (w - w_min) / (w_max - w_min + 1e-20)


def class_activation_map(induced: Tensor) -> Tensor:
    """S5, the first and coarsest prediction: [N,C5,h,w] -> [N,1,h,w] in [0,1].

    ReLU of the channel mean, minus its min, divided by (its max + 1e-6), clamped; per image.
    """
    return spatial_min_max(torch.relu(induced.float().mean(dim=1, keepdim=True))).clamp(0.0, 1.0)


def spatial_min_max(x: Tensor) -> Tensor:
    """[N,1,h,w] -> [N,1,h,w]: each image's map minus its min, divided by (its max + 1e-6)."""
    x = x - x.amin(dim=(2, 3), keepdim=True)
    return x / (x.amax(dim=(2, 3), keepdim=True) + 1e-6)
