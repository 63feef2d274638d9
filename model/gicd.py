"""GICD: backbone -> consensus -> GIM -> ARM decoder, for one group of images at a time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import Backbone
from .decoder import ARMDecoder
from .gim import class_activation_map, consensus_from_logits, gradient_induced_weights, segment_index
from .head import HeadPass
from .prototype import group_prototypes, object_prototypes, prototype_gate


@dataclass
class GICDOutput:
    """What GICD computes for a group of N images of size HxW.

    maps: [N,1,H,W] final maps in [0,1] (pred_1, times the object-prototype gate when it is on);
    side_maps: [CAM, pred_4, pred_3, pred_2, pred_1], the decoder's own, each [N,1,H,W] (empty
    without side outputs);
    consensus: [1,1000] (None without GIM); similarity: [N] consensus . own logits (None without GIM);
    weights: [N,C5] GIM channel weights (ones without GIM);
    prototypes: each image's object prototype per gate level ([N,C_l], L2-normalised; None without
    the object-prototype gate), for a running group prototype (the ``prototype_prior`` of later calls);
    embeddings: [N,D] each image's classifier input, fp32 (None without GIM), for
    :func:`streamcosal.inference.agreement.group_agreement`.
    """

    maps: Tensor
    side_maps: list[Tensor]
    consensus: Tensor | None
    similarity: Tensor | None
    weights: Tensor
    prototypes: list[Tensor] | None = None
    embeddings: Tensor | None = None


class GICD(nn.Module):
    """Gradient-induced co-saliency detection on any :class:`Backbone`.

    ``use_gim=False`` gives the paper's plain-FPN ablation (F5 not induced, no consensus);
    ``use_arm=False`` removes the prediction-gated skip features. ``consensus_net`` is a separate
    classifier for the consensus, used only when its weights differ from the backbone's.
    ``embedding_share`` mixes GIM's class-consensus weights with embedding-consensus weights (see
    :func:`gradient_induced_weights`; 0, the default, is the paper's GIM). It has no parameters: a
    trained decoder runs with any share, and checkpoints record the one they were chosen with.
    ``prototype_gate`` > 0 (not in the paper; 0, the default, is off) multiplies each final map by
    its similarity to the group's object prototype to that power (:func:`model.prototype.prototype_gate`,
    over the head's features and F4); it too has no parameters, and the loss is on the decoder's own
    side outputs.
    """

    def __init__(self, backbone: Backbone, *, use_gim: bool = True, use_arm: bool = True,
                 consensus_net: Backbone | None = None, embedding_share: float = 0.0,
                 prototype_gate: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = ARMDecoder(backbone.channels, use_arm=use_arm)
        self.consensus_net = consensus_net
        self.use_gim = use_gim
        self.embedding_share = embedding_share
        self.prototype_gate = prototype_gate

    @property
    def embedding_share(self) -> float:
        return self._embedding_share

    @embedding_share.setter
    def embedding_share(self, value: float) -> None:
        self._embedding_share = _unit_interval("embedding_share", value, "the paper's GIM")

    @property
    def prototype_gate(self) -> float:
        return self._prototype_gate

    @prototype_gate.setter
    def prototype_gate(self, value: float) -> None:
        self._prototype_gate = _unit_interval("prototype_gate", value, "off, as in the paper")

    @property
    def use_arm(self) -> bool:
        return self.decoder.use_arm

    def train(self, mode: bool = True) -> "GICD":
        """Train mode for the decoder alone: the backbone and the consensus classifier are ImageNet's,
        frozen, and stay in eval mode (their BatchNorms keep ImageNet's statistics, and GIM's gradients
        through the head are taken with them, :meth:`Backbone.head_pass`)."""
        super().train(mode)
        for net in (self.backbone, self.consensus_net):
            if net is not None:
                net.eval()
        return self

    def consensus_logits(self, x: Tensor, f5: Tensor | None = None, head: HeadPass | None = None) -> Tensor:
        """ImageNet logits for the consensus, in fp32: x [N,3,H,W] -> [N,1000].

        ``f5`` (the backbone's F5 of x) and ``head`` (the backbone's head pass of f5) are reused when the
        consensus classifier is the backbone.
        """
        net = self.consensus_net or self.backbone
        if head is not None and f5 is not None and self.consensus_net is None:
            return head.classify_logits
        if f5 is None or self.consensus_net is not None:
            f5 = net.features(x)[4]
        with torch.autocast(f5.device.type, enabled=False):
            return net.classify(f5.float()).float()

    def forward(self, x: Tensor, consensus: Tensor | None = None, side_outputs: bool = True,
                prototype_prior: list[Tensor] | None = None) -> GICDOutput:
        """x: [N,3,H,W], one group, normalised for the backbone.

        consensus: [1,1000] to segment against a consensus computed elsewhere (a larger group, a
        running stream consensus); by default the consensus of x itself. ``side_outputs=False``
        (inference): only the final map is upsampled to HxW and ``side_maps`` is empty.
        prototype_prior: per gate level [1,C_l], the summed object prototypes of images segmented
        before (earlier windows), added to x's own for the group's prototype; ignored without the gate.
        """
        return self.decode(x, self.backbone.features(x), consensus, side_outputs, prototype_prior)

    def decode(self, x: Tensor, feats: list[Tensor], consensus: Tensor | None = None, side_outputs: bool = True,
               prototype_prior: list[Tensor] | None = None, segments: Sequence[int] | None = None) -> GICDOutput:
        """:meth:`forward` from the backbone's features of x, ``feats`` [F1..F5]: the head, GIM, the
        decoder and the gate (a caller that needs x's logits first, for a running consensus, reads
        them from F5 with :meth:`consensus_logits` and passes the consensus).

        ``segments``: x holds several groups, of these sizes, one after another (their windows in one
        pass); ``consensus`` is then theirs, [S,1000], and ``prototype_prior`` [S,C_l] per level (zeros
        for none). Each group's maps are those it gets alone: what the images of a group share (the
        consensus, the shared regions, the object prototype) is reduced within its own segment.
        """
        f5 = feats[4]
        head = None
        if self.use_gim:
            head = self.backbone.head_pass(f5)
            if consensus is None:
                consensus = consensus_from_logits(self.consensus_logits(x, f5, head))
            per_image = consensus if segments is None else consensus[segment_index(segments, consensus.device)]
            gim = gradient_induced_weights(self.backbone, f5, per_image, self.embedding_share, head, segments)
            induced, weights, similarity = gim.induced, gim.weights, gim.similarity
        else:
            consensus, similarity = None, None
            induced = f5.float()
            weights = torch.ones(f5.shape[:2], device=f5.device)
        cam = class_activation_map(induced)
        preds = self.decoder(feats[:4], induced.to(f5.dtype), cam)
        final, prototypes = preds[-1], None
        if self.prototype_gate > 0:
            levels = [self.backbone.head_features(f5) if head is None else head.features, feats[3]]
            prototypes = object_prototypes(levels, final)
            final = prototype_gate(levels, group_prototypes(prototypes, prototype_prior, segments), final,
                                   self.prototype_gate)
        side_maps = [_upsample(p, x) for p in [cam, *preds]] if side_outputs else []
        maps = side_maps[-1] if side_outputs and final is preds[-1] else _upsample(final, x)
        return GICDOutput(maps=maps, side_maps=side_maps, consensus=consensus,
                          similarity=similarity, weights=weights, prototypes=prototypes,
                          embeddings=None if head is None else head.embedding)

    def flip_averaged(self, x: Tensor, out: GICDOutput, prototype_prior: list[Tensor] | None = None) -> Tensor:
        """Test-time flip: ``out``'s maps [N,1,H,W] (``out`` = this network on x) averaged with the
        maps of x mirrored left-right, segmented against out's consensus (and ``prototype_prior``)
        and mirrored back; fp32."""
        mirrored = self(x.flip(-1), out.consensus, side_outputs=False, prototype_prior=prototype_prior)
        return (out.maps.float() + mirrored.maps.float().flip(-1)) / 2


def _unit_interval(name: str, value: float, zero: str) -> float:
    """value as a float, or ValueError naming the setting when it is outside [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1] (0: {zero}), got {value}")
    return float(value)


def _upsample(pred: Tensor, x: Tensor) -> Tensor:
    """pred [N,1,h,w] -> [N,1,H,W] like x, bilinear, fp32."""
    return F.interpolate(pred.float(), size=x.shape[2:], mode="bilinear", align_corners=True)
