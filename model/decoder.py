"""The ARM decoder: a top-down path whose skip features are gated by the coarser prediction.

Module names follow the authors' checkpoint (``toplayer.0``, ``latlayer4.convlayer.0``,
``enlayer4.enlayer.0``, ``dslayer4.predlayer.0``), so their weights load by name.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

WIDTH = 64


def _double_conv(cin: int, cout: int = WIDTH) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1))


class LatLayer(nn.Module):
    """Lateral (skip) layer: conv3x3(C_k->64), ReLU, conv3x3(64->64)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.convlayer = _double_conv(cin)

    def forward(self, x: Tensor) -> Tensor:
        return self.convlayer(x)


class EnLayer(nn.Module):
    """Enhancement layer: conv3x3(64->64), ReLU, conv3x3(64->64)."""

    def __init__(self) -> None:
        super().__init__()
        self.enlayer = _double_conv(WIDTH)

    def forward(self, x: Tensor) -> Tensor:
        return self.enlayer(x)


class DSLayer(nn.Module):
    """Deep-supervision (side output) layer: conv3x3, ReLU, conv3x3, ReLU, conv1x1(64->1), Sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.enlayer = nn.Sequential(
            nn.Conv2d(WIDTH, WIDTH, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(WIDTH, WIDTH, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.predlayer = nn.Sequential(nn.Conv2d(WIDTH, 1, 1), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return self.predlayer(self.enlayer(x))


def up(x: Tensor, like: Tensor) -> Tensor:
    """Bilinear resize of x to like's spatial size (align_corners=True)."""
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=True)


class ARMDecoder(nn.Module):
    """Top-down decoder for k = 4, 3, 2, 1.

    P_k = EnLayer_k(up(P_{k+1}) + LatLayer_k(F_k * up(pred_{k+1}))),  pred_k = DSLayer_k(P_k),
    with P_5 = TopLayer(F~5) and pred_5 = the CAM. With ``use_arm=False`` the skip features are not
    gated (a plain FPN top-down path).
    """

    def __init__(self, channels: tuple[int, int, int, int, int], use_arm: bool = True) -> None:
        super().__init__()
        self.use_arm = use_arm
        self.toplayer = nn.Sequential(nn.Conv2d(channels[4], WIDTH, 1), nn.ReLU(inplace=True), nn.Conv2d(WIDTH, WIDTH, 1))
        for k in (4, 3, 2, 1):
            self.add_module(f"latlayer{k}", LatLayer(channels[k - 1]))
            self.add_module(f"enlayer{k}", EnLayer())
            self.add_module(f"dslayer{k}", DSLayer())

    def forward(self, feats: list[Tensor], induced: Tensor, cam: Tensor) -> list[Tensor]:
        """feats: [F1..F4] (F_k: [N,C_k,h_k,w_k]); induced: F~5 [N,C5,h5,w5]; cam: [N,1,h5,w5].

        Returns [pred_4, pred_3, pred_2, pred_1], pred_k: [N,1,h_k,w_k] in [0,1].
        """
        p = self.toplayer(induced)
        pred = cam
        preds = []
        for k in (4, 3, 2, 1):
            f = feats[k - 1]
            skip = f * up(pred, f).to(f.dtype) if self.use_arm else f
            p = getattr(self, f"enlayer{k}")(up(p, f) + getattr(self, f"latlayer{k}")(skip))
            pred = getattr(self, f"dslayer{k}")(p)
            preds.append(pred)
        return preds
