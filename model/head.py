"""One fp32 pass of a backbone's ImageNet classifier head over F5: what GIM, the consensus and the
object-prototype gate read from it.

GIM needs each image's embedding (the classifier's input), its logits, and the spatial mean of
d(v_i . embedding_i)/dF5_i for one or two directions v (the class consensus pulled back through the
last linear layer; the group's mean embedding). The gate needs the head's spatial features. One pass
gives all of them; before, the head ran once for the consensus, once for GIM (with one backward pass
per direction) and once more for the gate.

Three ways to the gradient's spatial mean:

- :class:`PullbackHeadPass`, any head: ``torch.func.vjp``, one backward pass per direction.
- :class:`PointwiseHeadPass`, a head that is a 1x1 convolution (weight W, [D,C5]), a pointwise
  activation a and a global average pool over P positions (EfficientNet-Lite's conv_head, bn2, pool):
  embedding = mean_p a(W f_p + b), so the mean over p of d(v . embedding)/df_p is
  W^T (v * mean_p a'(W f_p + b)) / P, [N,C5] from two small matrix products. On the default model
  (groups of 8 at 224, 2 cores) this with the shared pass takes 1.9 ms where the three passes and
  two backward passes took 6.8.
- :class:`PooledLinearHeadPass`, a head that average-pools F5 onto cells and starts with a linear
  layer (VGG-16: AdaptiveAvgPool2d(7), flatten, fc6): each cell is an average of F5's positions, so
  the mean over F5's P positions of the gradient is (1/P) times its sum over the cells, u W_c / P, with
  u the gradient at the linear layer's output and W_c ([D1,C5]) its weight summed over each
  channel's cells. The 411 MB fc6 weight is then read once per group (its forward pass) instead of
  once more per direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor


@dataclass
class HeadPass:
    """features: the head's last spatial features, [N,D',h,w]; embedding: [N,D]; logits: [N,1000], each
    image's own, what GIM differentiates; classify_logits: [N,1000], the classifier as its weights were
    trained to run it (:meth:`~model.backbones.Backbone.classify`, what the consensus sums), the same
    tensor as logits where the two paths are one; all fp32 and without gradient. classify_pullback:
    the logits' vector-Jacobian product with respect to the embedding (``torch.func.vjp`` of the last
    linear layer): [N,1000] -> ([N,D],)."""

    features: Tensor
    embedding: Tensor
    logits: Tensor
    classify_logits: Tensor
    classify_pullback: Callable[[Tensor], tuple[Tensor, ...]]

    def class_direction(self, consensus: Tensor) -> Tensor:
        """d(consensus . logits_i)/d embedding_i: [1,1000] -> [N,D]."""
        return self.classify_pullback(consensus.expand_as(self.logits).to(self.logits.dtype))[0]

    def gradient_means(self, directions: Tensor) -> Tensor:
        """directions [K,N,D] -> [K,N,C5]: for each k and image i, the mean over F5's positions of
        d(directions[k,i] . embedding_i)/dF5_i."""
        raise NotImplementedError


@dataclass
class PullbackHeadPass(HeadPass):
    """Any head: ``pullback`` is the embedding's vector-Jacobian product with respect to F5
    (``torch.func.vjp``, which also compiles): [N,D] -> ([N,C5,h,w],)."""

    pullback: Callable[[Tensor], tuple[Tensor, ...]]

    def gradient_means(self, directions: Tensor) -> Tensor:
        return torch.stack([self.pullback(direction)[0].mean(dim=(2, 3)) for direction in directions])


@dataclass
class PointwiseHeadPass(HeadPass):
    """A 1x1 convolution, a pointwise activation, a global average pool (module docstring).

    weight: the convolution's, [D,C5]; slope_means: mean over positions of the activation's derivative
    at each pre-activation, [N,D]; positions: P = h*w.
    """

    weight: Tensor
    slope_means: Tensor
    positions: int

    def gradient_means(self, directions: Tensor) -> Tensor:
        return (directions * self.slope_means) @ self.weight / self.positions


@dataclass
class PooledLinearHeadPass(HeadPass):
    """Average pooling onto cells, flatten (channel-major), a linear layer, then any layers (module
    docstring).

    later_pullback: the embedding's vector-Jacobian product with respect to the linear layer's output
    (``torch.func.vjp`` of the layers after it): [N,D] -> ([N,D1],); cell_weight: the linear layer's
    weight summed over each F5 channel's cells, [D1,C5]; positions: P = h*w of F5.
    """

    later_pullback: Callable[[Tensor], tuple[Tensor, ...]]
    cell_weight: Tensor
    positions: int

    def gradient_means(self, directions: Tensor) -> Tensor:
        at_linear = torch.stack([self.later_pullback(direction)[0] for direction in directions])  # [K,N,D1]
        return at_linear @ self.cell_weight / self.positions
