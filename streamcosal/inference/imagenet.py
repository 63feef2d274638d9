"""ImageNet-1k class names: what a classifier's logits, or a group's consensus, are about.

The consensus GIM segments against is a distribution over these 1,000 classes, so its most
probable classes say which object the model took as the group's common one (a group of chairs
whose consensus is "dining table" gets the tables highlighted). Names come from timm's
``ImageNetInfo`` (already installed with the backbones).
"""

from __future__ import annotations

from functools import cache

import numpy as np


@cache
def _descriptions() -> tuple[str, ...]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return tuple(info.index_to_description(i) for i in range(info.num_classes()))


def imagenet_label(index: int) -> str:
    """The short name of ImageNet-1k class ``index`` (0..999), e.g. ``"golden retriever"``."""
    return _descriptions()[index].split(",")[0]


def top_classes(probs: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` most probable classes of a [1000] probability vector (a consensus), best first,
    as (name, probability)."""
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    if probs.size != len(_descriptions()):
        raise ValueError(f"top_classes needs the {len(_descriptions())} ImageNet-1k probabilities, got {probs.size} values")
    best = np.argsort(-probs, kind="stable")[:k]
    return [(imagenet_label(int(i)), float(probs[i])) for i in best]


def describe_classes(classes: list[tuple[str, float]]) -> str:
    """``top_classes``'s result as one line: ``"tabby 0.62, tiger cat 0.20, Egyptian cat 0.15"``."""
    return ", ".join(f"{label} {p:.2f}" for label, p in classes)
