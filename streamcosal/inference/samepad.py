"""TensorFlow's "same" padding of stride-2 convolutions, folded into their kernels: no padded copy.

EfficientNet-Lite's ported weights (timm's ``tf_`` models) pad each stride-2 convolution as TensorFlow
does: on an even input, (k-3)/2 before and (k-1)/2 after, which torch's symmetric padding cannot
express, so timm's ``Conv2dSame`` copies the input into a padded tensor first. A kernel one tap
larger, its first row and column zero, with symmetric padding (k-1)/2 computes the same sums (the
zero taps meet only the extra row and column before the input), and the same output size, H/2.

The default model has five such convolutions (the stem and four depthwise ones); their padded copies
were about 3% of its compiled time (2.5 ms of a group of 8 at 224, Zen4, bf16). Replaced, the
compiled default measured 102.8-103.7 frames/s against 98.4-101.0, the maps equal in fp32. Valid
for even inputs only: the engine's input sizes are multiples of 32, so every stride-2 input is.
"""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame
from torch import nn

M = TypeVar("M", bound=nn.Module)


def fold_same_padding(model: M) -> M:
    """A copy of ``model`` where every stride-2 ``Conv2dSame`` (square odd kernel k, no dilation) is the
    equivalent ``nn.Conv2d`` for even inputs: kernel k+1 with a zero first row and column, symmetric
    padding (k-1)/2; ``model`` itself when it has none (VGG-16)."""
    if not any(_foldable(m) for m in model.modules()):
        return model
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, conv in list(parent.named_children()):
            if _foldable(conv):
                setattr(parent, name, _folded(conv))
    return model


def _foldable(module: nn.Module) -> bool:
    return (isinstance(module, Conv2dSame) and module.stride == (2, 2) and module.dilation == (1, 1)
            and module.kernel_size[0] == module.kernel_size[1] and module.kernel_size[0] % 2 == 1)


def _folded(conv: Conv2dSame) -> nn.Conv2d:
    k = conv.kernel_size[0]
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, k + 1, stride=2, padding=(k - 1) // 2,
                      groups=conv.groups, bias=conv.bias is not None, device=conv.weight.device,
                      dtype=conv.weight.dtype)
    with torch.no_grad():
        plain.weight.copy_(F.pad(conv.weight, (1, 0, 1, 0)))
        if conv.bias is not None:
            plain.bias.copy_(conv.bias)
    return plain.train(conv.training).requires_grad_(conv.weight.requires_grad)
