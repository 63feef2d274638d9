"""Whether a group's images agree on one object, from their embeddings (the classifier's input).

GICD always answers: the consensus of a folder that holds two unrelated objects in equal share is
one of them (or a mix), and nothing in the maps says so. The embeddings of such a group fall into
two clusters. :func:`group_agreement` splits the group in two along the first principal direction
of its centred embeddings and compares the mean cosine similarity ACROSS the two halves with the
mean WITHIN them: about one when the halves show the same kind of object, well below it when they
do not.

Measured with the default model on groups of 8 images at 224 px (2026-12-04): 50 single-object
groups (the 12 PASCAL classes and 14 DAVIS videos, two groups each where they have 16 images)
have ratios of 0.75-1.0; of the 351 groups of 4 + 4 images of two different ones, 93% fall at or
below :data:`UNCERTAIN_RATIO` (0.7) and 76% of the 6 + 2 mixtures. Those that stay above are
near kinds (chair and sofa, a person in either half). Under 4 images, or a half under a quarter of
the group, say nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNCERTAIN_RATIO = 0.7
"""A group is uncertain at or below this ratio of across-halves to within-halves similarity."""
MIN_IMAGES = 4
MIN_SHARE = 0.25


@dataclass(frozen=True)
class Agreement:
    """halves: the images' indices in the group, split in two; ratio: mean cosine similarity across
    the halves / within them; uncertain: the halves look like two different objects."""

    halves: tuple[list[int], list[int]]
    ratio: float
    uncertain: bool


def group_agreement(embeddings: np.ndarray) -> Agreement | None:
    """embeddings [N,D] (any scale) -> the group's :class:`Agreement`; None for fewer than
    :data:`MIN_IMAGES` images or identical embeddings (nothing to split)."""
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] < MIN_IMAGES:
        return None
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    centred = e - e.mean(0)
    if not np.any(np.abs(centred) > 1e-9):
        return None
    direction = np.linalg.svd(centred, full_matrices=False)[0][:, 0]
    side = direction >= 0
    first, second = np.flatnonzero(side), np.flatnonzero(~side)
    if min(len(first), len(second)) < 2:
        return Agreement((first.tolist(), second.tolist()), 1.0, False)
    cos = e @ e.T
    within = (_mean_off_diagonal(cos[np.ix_(first, first)]) * len(first)
              + _mean_off_diagonal(cos[np.ix_(second, second)]) * len(second)) / len(e)
    ratio = float(cos[np.ix_(first, second)].mean() / max(within, 1e-12))
    balanced = min(len(first), len(second)) >= MIN_SHARE * len(e)
    return Agreement((first.tolist(), second.tolist()), ratio, balanced and ratio <= UNCERTAIN_RATIO)


def _mean_off_diagonal(square: np.ndarray) -> float:
    n = square.shape[0]
    return float((square.sum() - np.trace(square)) / (n * (n - 1)))
