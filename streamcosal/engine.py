"""The inference engine: batching, chunking, precision and device around a GICD network.

One group is one batch: the backbone runs once per image, the consensus comes from the summed
logits, GIM's gradient goes through the classifier head only, and the decoder is batched. Groups
larger than ``chunk_size`` take two passes (consensus over every chunk first, then the maps chunk
by chunk), so memory stays flat however large the group is.
"""

from __future__ import annotations

import copy
import itertools
import os
import statistics
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from . import __version__
from .compilation import compile_for_inference, frozen, uncompile
from .guided import Upsampling, guided_upsample
from .model import GICD, GICDOutput, WeightsError, consensus_from_logits, load_checkpoint, load_official
from .precision import Precision, auto_reason, autocast, resolve_precision
from .samepad import fold_same_padding

T = TypeVar("T")
ConsensusOfLogits = Callable[[Tensor], Tensor]
"""A group's consensus made from a group's logits: [N,1000] fp32 on the CPU -> [1,1000]."""

PRETRAINED = {"efficientnet_lite2": "gicd_lite2.pt", "efficientnet_lite0": "gicd_lite0.pt"}
"""The embedded checkpoints by backbone; the first is the default (chosen on the validation split:
reports/training/ablation_table.md)."""
DEFAULT_BACKBONE = "efficientnet_lite2"
MIN_SHRINK = 1.4
"""A group runs above ``input_size`` only at a size its frames' short side is at least this many times
larger than (:meth:`CoSalEngine.size_for`): on 14 DAVIS videos 480 -> 288 (1.67x), 405 -> 288 and
360 -> 256 (1.41x) held, 360 -> 288 (1.25x) lost breakdance (0.53 -> 0.12 IoU: its consensus flips)."""


@dataclass
class GroupPrediction:
    """Maps at the model's input size for N images. maps: [N,S,S] float32 in [0,1];
    similarity: [N] (consensus . own logits; NaN without GIM); consensus: [1000] (None without GIM);
    prototypes: each image's object prototype per gate level, [N,C_l] float32 (None without the
    object-prototype gate; :class:`streamcosal.prototypes.RunningPrototype` sums them over windows)."""

    maps: np.ndarray
    similarity: np.ndarray
    consensus: np.ndarray | None
    prototypes: list[np.ndarray] | None = None


def resolve_device(device: str) -> torch.device:
    """"auto" is CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda (cuda:N for one GPU)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use device='auto' or 'cpu'")
    return dev


class CoSalEngine:
    """Stateful, user-facing co-saliency predictor around a :class:`GICD` network.

    >>> eng = CoSalEngine.from_pretrained()
    >>> maps = eng.predict_group(images)   # HxWx3 uint8 RGB arrays -> HxW float32 maps in [0,1]
    """

    def __init__(self, model: GICD, *, device: str = "auto", precision: Precision = "auto",
                 input_size: int = 224, max_input_size: int | None = None, flip: bool = False,
                 upsampling: Upsampling = "bilinear", chunk_size: int = 32, channels_last: bool = True,
                 compile: bool = False, name: str = "gicd", version: str = __version__) -> None:
        for what, size in (("input_size", input_size), ("max_input_size", max_input_size or input_size)):
            if size < 32 or size % 32:
                raise ValueError(f"{what} {size} is not a multiple of 32 (the backbone's stride): the decoder's "
                                 "levels would not align and the maps degrade (Lite2's native 260 loses to 256 "
                                 "everywhere); use e.g. 224, 256 or 288")
        if max_input_size is not None and max_input_size < input_size:
            raise ValueError(f"max_input_size {max_input_size} is smaller than input_size {input_size}")
        self.device = resolve_device(device)
        self.requested_precision = precision
        self.precision = resolve_precision(precision, self.device)
        """The precision that runs: ``auto`` resolved for the device (:mod:`streamcosal.precision`)."""
        self.input_size = input_size
        """The smallest size frames are resized to (SxS), and the size of groups of small frames."""
        self.max_input_size = max_input_size or input_size
        """The largest: a group of large frames runs at up to it (:meth:`size_for`)."""
        self.flip = flip
        """Also segment the group mirrored, against the same consensus, and average each map with its
        mirrored twin's (test-time flip): twice the work (accuracy: README, Accuracy)."""
        if upsampling not in ("guided", "bilinear"):
            raise ValueError(f"unknown upsampling {upsampling!r}: use guided or bilinear")
        self.upsampling = upsampling
        """How maps are brought to each frame's size (:meth:`upsample`)."""
        self.chunk_size = chunk_size
        self.name = name
        self.version = version
        self.channels_last = channels_last
        model = model.eval().to(self.device)
        for p in model.parameters():
            p.requires_grad_(False)
        model = fold_same_padding(fold_batch_norms(model, torch.zeros(1, 3, input_size, input_size, device=self.device)))
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.compiled = False
        """Whether the network runs compiled (:mod:`streamcosal.compilation`, opt-in); False again after
        compiling failed (a warning says so, the run goes on eagerly)."""
        if compile:
            try:
                compile_for_inference(self.model)
                self.compiled = True
            except Exception as error:  # torch.compile unavailable on this platform or Python
                self._compile_failed(error)

    def describe(self) -> str:
        """One line for the start of a run: model, device, input size, flip, guided upsampling, the GIM
        embedding share and the object-prototype gate when on, and the precision that runs (and why)."""
        share, gate = self.model.embedding_share, self.model.prototype_gate
        line = (f"model {self.name} {self.version} on {self.device}, {self.sizes()} px"
                f"{', flip' if self.flip else ''}{', guided upsampling' if self.upsampling == 'guided' else ''}"
                f"{f', GIM embedding share {share:g}' if share else ''}"
                f"{f', object-prototype gate {gate:g}' if gate else ''}{', compiled' if self.compiled else ''}"
                f", precision {self.precision}")
        if self.requested_precision == "auto":
            line += f" (auto: {auto_reason(self.device)})"
        return line

    def model_metadata(self) -> dict[str, str]:
        """What the results record about the model that made them."""
        return {"name": self.name, "version": self.version, "precision": self.precision, "device": str(self.device),
                "input_size": self.sizes(), "upsampling": self.upsampling,
                "embedding_share": f"{self.model.embedding_share:g}",
                "prototype_gate": f"{self.model.prototype_gate:g}", "compiled": str(self.compiled).lower()}

    def _network(self, call: Callable[[], T]) -> T:
        """call() (a pass of the network); when it runs compiled and compiling fails (no C++ compiler,
        an operator inductor cannot lower), again uncompiled from then on, after a warning."""
        if not self.compiled:
            return call()
        try:
            with frozen():
                return call()
        except torch._dynamo.exc.TorchDynamoException as error:
            self._compile_failed(error)
            return call()

    def _compile_failed(self, error: Exception) -> None:
        """Run uncompiled from now on, and warn with the reason (the error's first line)."""
        uncompile(self.model)
        self.compiled = False
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0]}" if str(error).strip() else type(error).__name__
        warnings.warn(f"torch.compile is unavailable or failed here ({reason}); running uncompiled: the same maps, "
                      "at the uncompiled speed (leave out --compile to skip trying)", RuntimeWarning, stacklevel=3)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, backbone_weights: str | os.PathLike | None = None,
                        embedding_share: float | None = None, prototype_gate: float | None = None,
                        **kwargs: object) -> "CoSalEngine":
        """An engine from a checkpoint of ours (decoder weights + metadata); ``embedding_share``,
        ``prototype_gate`` and ``upsampling`` (keyword) override the checkpoint's (0: the paper's GIM, no gate;
        :func:`model.gim.gradient_induced_weights`, :func:`model.prototype.prototype_gate`)."""
        model, meta = load_checkpoint(path, backbone_weights)
        kwargs.setdefault("upsampling", meta["upsampling"])
        if embedding_share is not None:
            model.embedding_share = embedding_share
        if prototype_gate is not None:
            model.prototype_gate = prototype_gate
        if "input_size" not in kwargs:  # a size asked for is the size; else the checkpoint's range
            kwargs["input_size"] = meta["input_size"]
            kwargs.setdefault("max_input_size", meta["max_input_size"])
        kwargs.setdefault("name", f"gicd-{meta['backbone']}")
        kwargs.setdefault("version", str(meta["version"]))
        return cls(model, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_pretrained(cls, backbone: str = DEFAULT_BACKBONE, **kwargs: object) -> "CoSalEngine":
        """An embedded model: GICD on EfficientNet-Lite2 (the default) or ``"efficientnet_lite0"``
        (the previous default); nothing is downloaded."""
        return cls.from_checkpoint(default_weights_path(backbone), **kwargs)

    @classmethod
    def from_official_checkpoint(cls, gicd_path: str | os.PathLike, vgg16_path: str | os.PathLike | None = None,
                                 *, embedding_share: float = 0.0, prototype_gate: float = 0.0,
                                 **kwargs: object) -> "CoSalEngine":
        """The authors' released GICD (``gicd_ginet.pth``) with torchvision's VGG-16 for the consensus;
        as in the paper unless ``embedding_share`` or ``prototype_gate`` say otherwise."""
        kwargs.setdefault("name", "gicd-vgg16-official")
        model = load_official(gicd_path, vgg16_path)
        model.embedding_share = embedding_share
        model.prototype_gate = prototype_gate
        return cls(model, **kwargs)  # type: ignore[arg-type]

    # -- tensors ------------------------------------------------------------------------------
    def sizes(self) -> str:
        """The input size, or the range of sizes groups run at: "224" or "224-288"."""
        fixed = self.max_input_size == self.input_size
        return f"{self.input_size}" if fixed else f"{self.input_size}-{self.max_input_size}"

    def size_for(self, shapes: Iterable[tuple[int, ...]]) -> int:
        """The input size S of a group whose frames have these shapes ((H, W, ...) each): the largest
        multiple of 32 from ``input_size`` to ``max_input_size`` that shrinks the median frame's short
        side by at least ``MIN_SHRINK``; ``input_size`` for smaller frames.

        Larger inputs give the decoder's maps more detail where the frames have it (the default on
        the 14 DAVIS videos, mean IoU of 0.5-masks: at 854x480, 0.660 at 224 and 0.684 at 288, every
        video better; at 640x360 with guided upsampling, 0.672 at 224, 0.684 at 256), but groups of
        small frames enlarged to them swell the masks over textured background (160x96 clips at 288:
        goat 0.70 -> 0.17), and at some sizes a video's consensus flips to its background (640x360 at
        288: breakdance's is "palace", 0.55 -> 0.12; reports/guided/consensus_sizes.md). In a photo
        group the median frame decides, not the smallest: the few small photos are enlarged, which
        costs them nothing (the held-out twin on DAVIS frames with every fourth a 320x180 thumbnail,
        IoU at 288 against 224: thumbnails 0.681 against 0.648, large frames 0.686 against 0.652;
        reports/guided/mixed_sizes.md).
        """
        side = statistics.median_low([min(shape[:2]) for shape in shapes] or [0])
        return max(self.input_size, min(self.max_input_size, int(side / MIN_SHRINK) // 32 * 32))

    def prepare(self, image: np.ndarray, size: int | None = None) -> Tensor:
        """HxWx3 uint8 RGB -> [3,S,S] float in [0,1] on the CPU (resized to ``size``, by default
        ``input_size``; not yet normalised)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
        s = size or self.input_size
        shrink = image.shape[0] > s or image.shape[1] > s
        resized = cv2.resize(image, (s, s), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        # In numpy: torch's threaded uint8->float conversion of one small image took ~15 ms on a
        # busy 2-core CPU, numpy's takes 0.5 ms; the values are the same.
        chw = np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32)
        chw /= np.float32(255.0)
        return torch.from_numpy(chw)

    def normalise(self, x: Tensor) -> Tensor:
        """[N,3,S,S] in [0,1] (any device) -> normalised for the backbone, on the engine's device."""
        x = self.model.backbone.preprocess(x.to(self.device, non_blocking=True))
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _chunks(self, x: Tensor) -> Iterator[Tensor]:
        for start in range(0, x.shape[0], self.chunk_size):
            yield self.normalise(x[start:start + self.chunk_size])

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """Consensus logits of a batch in chunks: [N,3,S,S] in [0,1] -> [N,1000] fp32 on the CPU."""
        out = []
        for chunk in self._chunks(x):
            with autocast(self.precision, self.device):
                out.append(self._network(lambda: self.model.consensus_logits(chunk)).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def segment(self, x: Tensor, consensus: Tensor | ConsensusOfLogits | None = None,
                prototype_prior: Sequence[np.ndarray] | None = None) -> GroupPrediction:
        """Segment the common object of one group: x [N,3,S,S] in [0,1] (from :meth:`prepare`).

        consensus: [1,1000] from elsewhere (a whole video); or a function that makes it from x's
        logits ([N,1000] fp32 on the CPU; a running stream consensus that adds a window's frames),
        given them from the backbone pass that segments x (a second pass when N > chunk_size); by
        default the group's own, computed over every chunk before any map when N > chunk_size.
        prototype_prior: per gate level [C_l], the summed object prototypes of frames segmented
        before (a video's earlier windows, :class:`streamcosal.prototypes.RunningPrototype`); the
        object-prototype gate compares each map with them and x's own. Chunks after the first also
        see the earlier chunks' prototypes. Ignored without the gate.
        """
        if x.shape[0] == 0:
            raise ValueError("cannot segment an empty group")
        if callable(consensus) and x.shape[0] > self.chunk_size:
            consensus = consensus(self.logits(x))
        if consensus is None and self.model.use_gim and x.shape[0] > self.chunk_size:
            consensus = consensus_from_logits(self.logits(x))
        prior = None if prototype_prior is None else [torch.as_tensor(p, device=self.device).float()[None]
                                                      for p in prototype_prior]
        maps, sims, prototypes = [], [], []
        for chunk in self._chunks(x):
            with autocast(self.precision, self.device):
                feats = self._network(lambda: self.model.backbone.features(chunk))
                if callable(consensus):  # outside the retry of a failed compile: called once
                    consensus = consensus(self._network(lambda: self.model.consensus_logits(chunk, feats[4])).cpu())
                out, prob = self._network(lambda: self._decode(chunk, feats, consensus, prior))
            consensus = out.consensus if consensus is None else consensus
            maps.append(prob[:, 0].float().cpu())
            sims.append(out.similarity.cpu() if out.similarity is not None else torch.full((chunk.shape[0],), float("nan")))
            if out.prototypes is not None:
                prototypes.append([p.float().cpu() for p in out.prototypes])
                sums = [p.sum(0, keepdim=True) for p in out.prototypes]
                prior = sums if prior is None else [a + b for a, b in zip(prior, sums)]
        return GroupPrediction(
            maps=torch.cat(maps).numpy(),
            similarity=torch.cat(sims).numpy(),
            consensus=None if consensus is None else consensus[0].float().cpu().numpy(),
            prototypes=[torch.cat(level).numpy() for level in zip(*prototypes)] if prototypes else None,
        )

    def _decode(self, chunk: Tensor, feats: list[Tensor], consensus: Tensor | None,
                prior: list[Tensor] | None) -> tuple[GICDOutput, Tensor]:
        """The network after the backbone on one normalised chunk [n,3,S,S] (``feats``: its F1..F5): its
        output and its maps [n,1,S,S] (flip-averaged with ``flip``)."""
        out = self.model.decode(chunk, feats, None if consensus is None else consensus.to(self.device),
                                side_outputs=False, prototype_prior=prior)
        return out, self.model.flip_averaged(chunk, out, prior) if self.flip else out.maps

    # -- images ------------------------------------------------------------------------------
    def predict_group(self, images: Sequence[np.ndarray], consensus: Tensor | None = None) -> list[np.ndarray]:
        """HxWx3 uint8 RGB images of one group -> one HxW float32 map in [0,1] per image (the group runs at
        :meth:`size_for` its images)."""
        if len(images) == 0:
            raise ValueError("predict_group needs at least one image")
        size = self.size_for(im.shape for im in images)
        x = torch.stack([self.prepare(im, size) for im in images])
        pred = self.segment(x, consensus)
        return [self.upsample(m, im) for m, im in zip(pred.maps, images)]

    def upsample(self, saliency: np.ndarray, image: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """[S,S] map -> [H,W] float32 map in [0,1] at the size of ``image`` (HxWx3 uint8 RGB, the frame it
        was made from), or at ``size`` when ``image`` is a reduced copy of a frame of that size: edges
        guided by the image (:mod:`streamcosal.guided`) or bilinear, as ``upsampling`` says."""
        size = size or image.shape[:2]
        if self.upsampling == "bilinear":
            return resize_map(saliency, size)
        prob = guided_upsample(saliency, image)
        return prob if prob.shape == tuple(size) else resize_map(prob, size)


def fold_batch_norms(model: GICD, example: Tensor) -> GICD:
    """A copy of ``model`` (eval mode) where every BatchNorm that directly follows a convolution is
    folded into that convolution's weights; ``model`` itself when there is none (VGG-16).

    Candidates are a ``Conv2d`` child registered right before a ``BatchNorm2d`` child; a pair is
    folded only when a pass of the backbones on ``example`` [1,3,S,S] shows that the BatchNorm's
    input is that convolution's output. timm's ``BatchNormAct2d`` keeps its activation. The folded
    network computes the same function up to rounding, without a pass over memory per BatchNorm
    (EfficientNet-Lite0 has 49: 8.52 -> 10.00 frames/s per core on an AVX2 CPU, fp32).
    """
    if not _conv_norm_pairs(model):
        return model
    model = copy.deepcopy(model)
    pairs = _conv_norm_pairs(model)
    outputs: dict[int, Tensor] = {}
    verified: set[int] = set()
    hooks = []
    for i, (parent, cname, bname) in enumerate(pairs):
        hooks.append(getattr(parent, cname).register_forward_hook(
            lambda _m, _a, out, i=i: outputs.__setitem__(i, out)))
        hooks.append(getattr(parent, bname).register_forward_pre_hook(
            lambda _m, args, i=i: verified.add(i) if args[0] is outputs.get(i) else None))
    with torch.no_grad():
        for net in (model.backbone, model.consensus_net):
            if net is not None:
                net.classify(net.features(example)[4])
    for h in hooks:
        h.remove()
    for i, (parent, cname, bname) in enumerate(pairs):
        if i in verified:
            bn = getattr(parent, bname)
            setattr(parent, cname, fuse_conv_bn_eval(getattr(parent, cname), bn))
            setattr(parent, bname, _after_norm(bn))
    return model.eval()


def _conv_norm_pairs(model: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """(parent, conv child's name, BatchNorm child's name) for each Conv2d child registered right
    before a BatchNorm2d child whose non-normalising part is known."""
    return [(parent, cname, bname) for parent in model.modules()
            for (cname, conv), (bname, bn) in itertools.pairwise(parent.named_children())
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and _after_norm(bn) is not None]


def _after_norm(bn: nn.BatchNorm2d) -> nn.Module | None:
    """What of a BatchNorm module remains once its normalisation is folded away: nothing for
    torch's BatchNorm2d, the dropout and activation of timm's BatchNormAct2d; None when unknown."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    if type(bn) is BatchNormAct2d:
        return nn.Sequential(bn.drop, bn.act)
    return None


def resize_map(saliency: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[S,S] map -> [H,W] (bilinear, align_corners=True, as the authors save maps), float32 in [0,1]."""
    t = torch.from_numpy(np.ascontiguousarray(saliency, dtype=np.float32))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=True)[0, 0].clamp_(0, 1).numpy()


def to_uint8(saliency: np.ndarray) -> np.ndarray:
    """Float map in [0,1] -> 8-bit map (rounded)."""
    return np.clip(np.rint(saliency * 255.0), 0, 255).astype(np.uint8)


def default_weights_path(backbone: str = DEFAULT_BACKBONE) -> Path:
    """The embedded checkpoint of ``backbone`` (the default model's by default); clear errors."""
    if backbone not in PRETRAINED:
        raise WeightsError(f"no embedded model for backbone {backbone!r}; embedded: {', '.join(PRETRAINED)}")
    path = Path(str(resources.files("streamcosal") / "weights" / PRETRAINED[backbone]))
    if not path.is_file():
        raise WeightsError(
            f"the embedded model's trained decoder weights ({path}) are not in this installation. "
            f"Train them with `streamcosal train configs/{'lite2_cp' if backbone.endswith('2') else 'lite0'}.toml` "
            "or pass a checkpoint: CoSalEngine.from_checkpoint(PATH)."
        )
    return path
