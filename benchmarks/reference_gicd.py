"""A faithful reference of the authors' GICD inference, written from gicd-reference.md.

It reproduces what the released test code does, not how streamcosal does it: torchvision's VGG-16
as the consensus classifier, run image by image; then, per image, a second VGG-16 (the backbone of
``gicd_ginet.pth``) with a ``.backward()`` from the similarity for GIM's gradient, and the decoder,
batch 1. Both networks are frozen (no weight receives a gradient, as in the authors' setup) and the
backward runs from the similarity to F5 only: G = d similarity / d F5 differentiates the classifier
head and nothing before F5. A backward through the convolutions and into every weight as well made
this reference about 1.5x slower than the authors' own inference.
Used by the tests (exactness of ``from_official_checkpoint``) and by the speed benchmark.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor

# torchvision ``features`` index of each VGG-16 conv, in the authors' naming.
CONV_INDEX = {
    "conv1.conv1_1": 0, "conv1.conv1_2": 2, "conv2.conv2_1": 5, "conv2.conv2_2": 7, "conv3.conv3_1": 10,
    "conv3.conv3_2": 12, "conv3.conv3_3": 14, "conv4.conv4_1": 17, "conv4.conv4_2": 19, "conv4.conv4_3": 21,
    "conv5.conv5_1": 24, "conv5.conv5_2": 26, "conv5.conv5_3": 28,
}
# F1..F5 end after these torchvision feature indices (the ReLUs of conv1_2 .. conv5_3).
STAGE_ENDS = (4, 9, 16, 23, 30)


def _vgg(state: dict[str, Tensor]) -> torchvision.models.VGG:
    net = torchvision.models.vgg16(weights=None)
    net.load_state_dict(state)
    return net.eval()


def official_backbone_as_torchvision(gicd_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The ``backbone.*`` tensors of gicd_ginet.pth under torchvision's VGG-16 names."""
    out = {}
    for name, index in CONV_INDEX.items():
        for p in ("weight", "bias"):
            out[f"features.{index}.{p}"] = gicd_state[f"backbone.{name}.{p}"]
    for index in (0, 3, 6):
        for p in ("weight", "bias"):
            out[f"classifier.{index}.{p}"] = gicd_state[f"backbone.classifier.{index}.{p}"]
    return out


class ReferenceGICD:
    """The authors' per-image inference. ``__call__(x [N,3,224,224]) -> maps [N,1,224,224]``."""

    def __init__(self, gicd_state: dict[str, Tensor], vgg16_state: dict[str, Tensor]) -> None:
        self.s = gicd_state
        self.classifier_net = _vgg(vgg16_state)
        self.backbone = _vgg(official_backbone_as_torchvision(gicd_state))
        for p in (*self.classifier_net.parameters(), *self.backbone.parameters()):
            p.requires_grad_(False)

    def _conv(self, x: Tensor, name: str, padding: int = 1) -> Tensor:
        return F.conv2d(x, self.s[f"{name}.weight"], self.s[f"{name}.bias"], padding=padding)

    def _pair(self, x: Tensor, prefix: str, padding: int = 1) -> Tensor:
        return self._conv(F.relu(self._conv(x, f"{prefix}.0", padding)), f"{prefix}.2", padding)

    def _features(self, x: Tensor) -> list[Tensor]:
        feats, start = [], 0
        for end in STAGE_ENDS:
            x = self.backbone.features[start:end](x)
            feats.append(x)
            start = end
        return feats

    def _decode(self, feats: list[Tensor], induced: Tensor, cam: Tensor, size: tuple[int, int]) -> Tensor:
        def up(t: Tensor, like: Tensor) -> Tensor:
            return F.interpolate(t, size=like.shape[2:], mode="bilinear", align_corners=True)

        p = self._pair(induced, "toplayer", padding=0)
        pred = cam
        for k in (4, 3, 2, 1):
            f = feats[k - 1]
            lat = self._pair(f * up(pred, f), f"latlayer{k}.convlayer")
            p = self._pair(up(p, f) + lat, f"enlayer{k}.enlayer")
            d = F.relu(self._pair(p, f"dslayer{k}.enlayer"))
            pred = torch.sigmoid(self._conv(d, f"dslayer{k}.predlayer.0", padding=0))
        return F.interpolate(pred, size=size, mode="bilinear", align_corners=True)

    def __call__(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            logits = torch.cat([self.classifier_net(x[i:i + 1]) for i in range(x.shape[0])])
            consensus = torch.softmax(logits.sum(0, keepdim=True), dim=1)
        maps = []
        for i in range(x.shape[0]):
            with torch.no_grad():
                feats = self._features(x[i:i + 1])
            f5 = feats[4].requires_grad_()  # the only leaf that takes a gradient
            own = self.backbone.classifier(torch.flatten(F.adaptive_avg_pool2d(f5, 7), 1))
            (consensus * own).sum().backward()
            with torch.no_grad():
                w = F.relu(f5.grad.mean(dim=(2, 3)))
                w = (w - w.min()) / (w.max() - w.min() + 1e-20)
                induced = f5 * w[:, :, None, None]
                cam = F.relu(induced.mean(dim=1, keepdim=True))
                cam = cam - cam.min()
                cam = (cam / (cam.max() + 1e-6)).clamp(0, 1)
                maps.append(self._decode([f.detach() for f in feats], induced, cam, x.shape[2:]))
        return torch.cat(maps)
