"""The group's embedding consensus from the regions its images share, whatever their class.

GIM's embedding consensus was the mean of the images' embeddings (the classifier's pooled input).
An image's embedding pools every region alike: in a group where each image also holds a salient
object of its own (a passer-by, a pasted dog), the mean is the common object plus the average of
the others, and where ImageNet has no class for the common object (a person) nothing else pulls
towards it.

Here each position of an image's head features (:attr:`~model.head.HeadPass.features`, the
classifier's last spatial map, whose spatial mean is the embedding) gets a support: its cosine
similarity to its best match in every other image of the group, averaged over those images. What
recurs in every image (the common object, and a shared background) is supported; what one image
alone holds is not. Each image pools its features with its positions' support above its own mean
support as weights, and the consensus is the mean of those pooled embeddings: the classifier's
embedding of the group's shared regions, with no class involved.

On the people-aware held-out split (reports/training/groups_table.md; 2026-12-04) this raised the
composites' maxF of every held-out video by 0 to 0.03 over the plain mean, the person group's
included, at a cost of about N*P x N*P x D multiply-adds for N images of P positions (0.2 GFLOP for
8 images at 224 px).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def position_support(features: Tensor) -> Tensor:
    """[N,D,h,w] -> [N,h*w]: each position's cosine similarity to its best match in each OTHER image,
    averaged over them (zeros for one image). fp32."""
    n, d = features.shape[:2]
    if n == 1:
        return features.new_zeros((1, features.shape[2] * features.shape[3]), dtype=torch.float32)
    positions = F.normalize(features.float().flatten(2), dim=1).transpose(1, 2)  # [N,P,D]
    flat = positions.reshape(-1, d)  # [N*P,D]
    best = torch.stack([(flat @ other.T).amax(1) for other in positions], dim=1)  # [N*P,N]
    best = best.view(n, -1, n)
    own = torch.eye(n, dtype=torch.bool, device=features.device)[:, None, :]
    return best.masked_fill(own, 0.0).sum(2) / (n - 1)


def common_region_embedding(features: Tensor, embedding: Tensor) -> Tensor:
    """The group's class-agnostic embedding consensus, [1,D], from N images' head features
    [N,D',h,w] and embeddings [N,D] (:class:`~model.head.HeadPass`).

    Falls back to the mean embedding where the head's features are not what its embedding pools
    (their channel counts differ: VGG-16's fc layers) or the group is one image.
    """
    if features.shape[0] == 1 or features.shape[1] != embedding.shape[1]:
        return embedding.mean(0, keepdim=True)
    support = position_support(features)
    weights = torch.relu(support - support.mean(1, keepdim=True))
    total = weights.sum(1, keepdim=True)
    weights = torch.where(total > 1e-6, weights / total.clamp(min=1e-6), 1.0 / weights.shape[1])  # flat: pool all
    pooled = (features.float().flatten(2) * weights[:, None]).sum(2)  # [N,D]
    return pooled.mean(0, keepdim=True)
