"""The training loss: soft IoU on the four side outputs (not the CAM), summed over the group."""

from __future__ import annotations

from torch import Tensor


def soft_iou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Sum over images of 1 - sum(S*G) / sum(S + G - S*G). pred, target: [N,1,H,W] in [0,1] -> scalar."""
    pred = pred.float()
    inter = (pred * target).sum(dim=(1, 2, 3))
    union = (pred + target - pred * target).sum(dim=(1, 2, 3))
    return (1.0 - inter / union.clamp_min(1e-6)).sum()


def gicd_loss(side_maps: list[Tensor], target: Tensor) -> Tensor:
    """side_maps: [CAM, pred_4, pred_3, pred_2, pred_1], each [N,1,H,W]; target: [N,1,H,W]."""
    return sum(soft_iou_loss(p, target) for p in side_maps[1:])  # type: ignore[return-value]
