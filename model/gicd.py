"""GICD: backbone -> consensus -> GIM -> ARM decoder, for one group of images at a time."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import Backbone
from .decoder import ARMDecoder
from .gim import class_activation_map, consensus_from_logits, gradient_induced_weights


@dataclass
class GICDOutput:
    """What GICD computes for a group of N images of size HxW.

    maps: [N,1,H,W] final maps (pred_1) in [0,1];
    side_maps: [CAM, pred_4, pred_3, pred_2, pred_1], each [N,1,H,W] (empty without side outputs);
    consensus: [1,1000] (None without GIM); similarity: [N] consensus . own logits (None without GIM);
    weights: [N,C5] GIM channel weights (ones without GIM).
    """

    maps: Tensor
    side_maps: list[Tensor]
    consensus: Tensor | None
    similarity: Tensor | None
    weights: Tensor


class GICD(nn.Module):
    """Gradient-induced co-saliency detection on any :class:`Backbone`.

    ``use_gim=False`` gives the paper's plain-FPN ablation (F5 not induced, no consensus);
    ``use_arm=False`` removes the prediction-gated skip features. ``consensus_net`` is a separate
    classifier for the consensus, used only when its weights differ from the backbone's.
    ``embedding_share`` mixes GIM's class-consensus weights with embedding-consensus weights (see
    :func:`gradient_induced_weights`; 0, the default, is the paper's GIM). It has no parameters: a
    trained decoder runs with any share, and checkpoints record the one they were chosen with.
    """

    def __init__(self, backbone: Backbone, *, use_gim: bool = True, use_arm: bool = True,
                 consensus_net: Backbone | None = None, embedding_share: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = ARMDecoder(backbone.channels, use_arm=use_arm)
        self.consensus_net = consensus_net
        self.use_gim = use_gim
        self.embedding_share = embedding_share

    @property
    def embedding_share(self) -> float:
        return self._embedding_share

    @embedding_share.setter
    def embedding_share(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"embedding_share must be in [0, 1] (0: the paper's GIM), got {value}")
        self._embedding_share = float(value)

    @property
    def use_arm(self) -> bool:
        return self.decoder.use_arm

    def consensus_logits(self, x: Tensor, f5: Tensor | None = None) -> Tensor:
        """ImageNet logits for the consensus, in fp32: x [N,3,H,W] -> [N,1000].

        ``f5`` (the backbone's F5 of x) is reused when the consensus classifier is the backbone.
        """
        net = self.consensus_net or self.backbone
        if f5 is None or self.consensus_net is not None:
            f5 = net.features(x)[4]
        with torch.autocast(f5.device.type, enabled=False):
            return net.classify(f5.float()).float()

    def forward(self, x: Tensor, consensus: Tensor | None = None, side_outputs: bool = True) -> GICDOutput:
        """x: [N,3,H,W], one group, normalised for the backbone.

        consensus: [1,1000] to segment against a consensus computed elsewhere (a larger group, a
        running stream consensus); by default the consensus of x itself. ``side_outputs=False``
        (inference): only the final map is upsampled to HxW and ``side_maps`` is empty.
        """
        feats = self.backbone.features(x)
        f5 = feats[4]
        if self.use_gim:
            if consensus is None:
                consensus = consensus_from_logits(self.consensus_logits(x, f5))
            gim = gradient_induced_weights(self.backbone, f5, consensus, self.embedding_share)
            induced, weights, similarity = gim.induced, gim.weights, gim.similarity
        else:
            consensus, similarity = None, None
            induced = f5.float()
            weights = torch.ones(f5.shape[:2], device=f5.device)
        cam = class_activation_map(induced)
        preds = self.decoder(feats[:4], induced.to(f5.dtype), cam)
        side_maps = [
            F.interpolate(p.float(), size=x.shape[2:], mode="bilinear", align_corners=True)
            for p in ([cam, *preds] if side_outputs else preds[-1:])
        ]
        return GICDOutput(maps=side_maps[-1], side_maps=side_maps if side_outputs else [], consensus=consensus,
                          similarity=similarity, weights=weights)

    def flip_averaged(self, x: Tensor, out: GICDOutput) -> Tensor:
        """Test-time flip: ``out``'s maps [N,1,H,W] (``out`` = this network on x) averaged with the
        maps of x mirrored left-right, segmented against out's consensus and mirrored back; fp32."""
        mirrored = self(x.flip(-1), out.consensus, side_outputs=False)
        return (out.maps.float() + mirrored.maps.float().flip(-1)) / 2
