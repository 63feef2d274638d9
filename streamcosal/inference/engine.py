"""The inference engine: batching, chunking, precision and device around a GICD network.

One group is one batch: the backbone runs once per image, the consensus comes from the summed
logits, GIM's gradient goes through the classifier head only, and the decoder is batched. Groups
larger than ``chunk_size`` take two passes (consensus over every chunk first, then the maps chunk
by chunk), so memory stays flat however large the group is.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from importlib.metadata import version as package_version
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from streamcosal.inference.allocator import keep_freed_memory
from streamcosal.inference.compilation import CompileGuard
from streamcosal.inference.device import resolve_device
from streamcosal.inference.folding import fold_batch_norms
from streamcosal.inference.precision import autocast, measure_fastest, precision_words, resolve_precision
from streamcosal.inference.retries import called_once, in_smaller_chunks
from streamcosal.inference.samepad import fold_same_padding
from streamcosal.inference.transforms import as_rgb_array, input_size_for, prepare_image, upsample_map
from streamcosal.inference.weights import DEFAULT_BACKBONE, default_weights_path
from streamcosal.model import GICD, GICDOutput, consensus_from_logits, group_consensus, load_checkpoint, load_official
from streamcosal.params import MIN_INPUT_SIZE, EngineSpec, Precision, Upsampling

ConsensusOfLogits = Callable[[Tensor], Tensor]
"""A group's consensus made from a group's logits: [N,1000] fp32 on the CPU -> [1,1000]."""


@dataclass
class GroupPrediction:
    """Maps at the model's input size for N images. maps: [N,S,S] float32 in [0,1];
    similarity: [N] (consensus . own logits; NaN without GIM); consensus: [1000] (None without GIM);
    prototypes: each image's object prototype per gate level, [N,C_l] float32 (None without the
    object-prototype gate; :class:`streamcosal.run.prototypes.RunningPrototype` sums them over windows);
    embeddings: [N,D] float32, each image's classifier input (None without GIM), what
    :func:`streamcosal.inference.agreement.group_agreement` reads."""

    maps: np.ndarray
    similarity: np.ndarray
    consensus: np.ndarray | None
    prototypes: list[np.ndarray] | None = None
    embeddings: np.ndarray | None = None


class CoSalEngine:
    """Stateful, user-facing co-saliency predictor around a :class:`GICD` network.

    >>> eng = CoSalEngine.from_pretrained()
    >>> maps = eng.predict_group(images)   # HxWx3 uint8 RGB arrays -> HxW float32 maps in [0,1]
    """

    def __init__(self, model: GICD, *, device: str = "auto", precision: Precision = "auto",
                 input_size: int = 224, max_input_size: int | None = None, flip: bool = False,
                 upsampling: Upsampling = "bilinear", chunk_size: int = 32, channels_last: bool = True,
                 compile: bool = False, name: str = "gicd", version: str | None = None,
                 measure_precision: bool | None = None) -> None:
        for what, size in (("input_size", input_size), ("max_input_size", max_input_size or input_size)):
            if size < 32 or size % 32:
                raise ValueError(f"{what} {size} is not a multiple of 32 (the backbone's stride): the decoder's "
                                 "levels would not align and the maps degrade (Lite2's native 260 loses to 256 "
                                 "everywhere); use e.g. 224, 256 or 288")
        if max_input_size is not None and max_input_size < input_size:
            raise ValueError(f"max_input_size {max_input_size} is smaller than input_size {input_size}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 (images per batch), got {chunk_size!r}")
        self.device = resolve_device(device)
        self.requested_precision = precision
        self.precision = resolve_precision(precision, self.device)
        """The precision that runs: ``auto`` resolved for the device (:mod:`streamcosal.inference.precision`)."""
        self.precision_seconds: dict[str, float] | None = None  # auto measured: each candidate's, one group
        measure = self.device.type == "cuda" if measure_precision is None else measure_precision
        self._to_measure = precision == "auto" and measure
        self._measuring = threading.Lock()  # units of an archive in threads share one engine
        self.input_size = input_size
        """The smallest size frames are resized to (SxS), and the size of groups of small frames."""
        self.max_input_size = max_input_size or input_size
        """The largest: a group of large frames runs at up to it (:meth:`size_for`)."""
        self.flip = flip
        """Also segment the group mirrored, against the same consensus, and average each map with its
        mirrored twin's (test-time flip): twice the work (accuracy: docs/accuracy.md)."""
        if upsampling not in ("guided", "bilinear"):
            raise ValueError(f"unknown upsampling {upsampling!r}: use guided or bilinear")
        self.upsampling = upsampling
        """How maps are brought to each frame's size (:meth:`upsample`)."""
        self.chunk_size = chunk_size
        self.name = name
        self.version = version or package_version("streamcosal")
        self.channels_last = channels_last
        model = model.eval().to(self.device)
        for p in model.parameters():
            p.requires_grad_(False)
        model = fold_same_padding(fold_batch_norms(model, torch.zeros(1, 3, input_size, input_size, device=self.device)))
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.network = CompileGuard(self.model, compile)
        """Runs the network's passes, compiled where that works (:mod:`streamcosal.inference.compilation`)."""

    @property
    def compiled(self) -> bool:
        """Whether the network runs compiled (opt-in); False again after compiling failed (a warning
        says so, the run goes on eagerly)."""
        return self.network.compiled

    def describe(self) -> str:
        """One line for the start of a run: model, device, input size, flip, guided upsampling, the GIM
        embedding share and the object-prototype gate when on, and the precision that runs (and why)."""
        share, gate = self.model.embedding_share, self.model.prototype_gate
        line = (f"model {self.name} {self.version} on {self.device}, {self.sizes()} px"
                f"{', flip' if self.flip else ''}{', guided upsampling' if self.upsampling == 'guided' else ''}"
                f"{f', GIM embedding share {share:g}' if share else ''}"
                f"{f', object-prototype gate {gate:g}' if gate else ''}{', compiled' if self.compiled else ''}")
        return line + ", precision " + precision_words(self.precision, self.requested_precision, self.device,
                                                      self.precision_seconds, pending=self._to_measure)

    @torch.no_grad()
    def settle_precision(self, group_size: int, size: int | None = None) -> None:
        """``auto`` measured (GPU, or ``measure_precision``): the fastest on ``group_size`` random frames at
        ``size`` (by default the largest the engine runs, ``max_input_size``: 854x480 video's), before a run
        records the precision that made its maps (else the first :meth:`segment` measures on its own). Where
        every candidate runs out of GPU memory, the chunks are halved as :meth:`segment` does."""
        if self._to_measure:  # random frames: the time does not depend on what they show
            size = size or self.max_input_size
            in_smaller_chunks(
                self, lambda: self._measure_precision(torch.rand(min(group_size, self.chunk_size), 3, size, size)))

    def _measure_precision(self, x: Tensor) -> None:
        """Each candidate on x's first chunk, with its own consensus and no prior (no run state touched)."""
        sample = x[:self.chunk_size]

        def run(precision: str) -> None:
            self.precision = resolve_precision(precision, self.device)
            self._segment(sample, None, None)

        with self._measuring:
            if self._to_measure:
                self.precision, self.precision_seconds = measure_fastest(run, self.device, sample.shape)
                self._to_measure = False

    def model_metadata(self) -> dict[str, str]:
        """What the results record about the model that made them."""
        return {"name": self.name, "version": self.version, "precision": self.precision, "device": str(self.device),
                "input_size": self.sizes(), "upsampling": self.upsampling,
                "embedding_share": f"{self.model.embedding_share:g}",
                "prototype_gate": f"{self.model.prototype_gate:g}", "compiled": str(self.compiled).lower()}

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
    def from_spec(cls, spec: EngineSpec) -> "CoSalEngine":
        """The engine the parameters of a run ask for (the CLI's engine options, a job's, a flow's)."""
        options: dict[str, object] = {"precision": spec.precision, "device": spec.device, "flip": spec.flip,
                                      "compile": spec.compile}
        if spec.upsampling is not None:
            options["upsampling"] = spec.upsampling
        if spec.input_size is not None:
            options["input_size"] = spec.input_size
        if spec.embedding_share is not None:
            options["embedding_share"] = spec.embedding_share
        if spec.prototype_gate is not None:
            options["prototype_gate"] = spec.prototype_gate
        if spec.official is not None:
            return cls.from_official_checkpoint(spec.official, spec.vgg16, **options)
        if spec.weights is not None:
            return cls.from_checkpoint(spec.weights, **options)
        return cls.from_pretrained(**options)

    @classmethod
    def from_pretrained(cls, backbone: str = DEFAULT_BACKBONE, **kwargs: object) -> "CoSalEngine":
        """An embedded model: GICD on EfficientNet-Lite2 (the default) or ``"efficientnet_lite0"``
        (smaller, faster); nothing is downloaded."""
        size = kwargs.get("input_size")
        if isinstance(size, int) and size < MIN_INPUT_SIZE:
            raise ValueError(f"input_size {size} is too small: below {MIN_INPUT_SIZE} px the backbone's consensus no "
                             f"longer names the object and the maps miss it (empty at 32 and 64 px); use "
                             f"{MIN_INPUT_SIZE} or more")
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
        side by at least ``MIN_SHRINK`` (:func:`~streamcosal.inference.transforms.input_size_for`);
        ``input_size`` for smaller frames.

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
        return input_size_for(shapes, self.input_size, self.max_input_size)

    def prepare(self, image: np.ndarray, size: int | None = None) -> Tensor:
        """HxWx3 uint8 RGB -> [3,S,S] float in [0,1] on the CPU (resized to ``size``, by default
        ``input_size``; not yet normalised)."""
        return prepare_image(image, size or self.input_size)

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
                out.append(self.network.run(lambda: self.model.consensus_logits(chunk), "logits", chunk.shape).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def segment(self, x: Tensor, consensus: Tensor | np.ndarray | ConsensusOfLogits | None = None,
                prototype_prior: Sequence[np.ndarray] | None = None) -> GroupPrediction:
        """Segment the common object of one group: x [N,3,S,S] in [0,1] (from :meth:`prepare`).

        consensus: [1,1000] (or [1000]; a tensor or an array) from elsewhere (a whole video); or a
        function that makes it from x's logits ([N,1000] fp32 on the CPU; a running stream consensus
        that adds a window's frames),
        given them from the backbone pass that segments x (a second pass when N > chunk_size); by
        default the group's own, computed over every chunk before any map when N > chunk_size.
        prototype_prior: per gate level [C_l], the summed object prototypes of frames segmented
        before (a video's earlier windows, :class:`streamcosal.run.prototypes.RunningPrototype`); the
        object-prototype gate compares each map with them and x's own. Chunks after the first also
        see the earlier chunks' prototypes. Ignored without the gate.

        A GPU that runs out of memory on a chunk: the chunk size is halved for this call and every later
        one, with one warning, and the group segmented again (a consensus function is still called once).
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"segment takes x as a torch tensor [N,3,S,S] in [0,1] (engine.prepare makes one from "
                            f"an image), got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"segment takes x [N,3,S,S] (RGB, channels first), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"segment takes x in [0,1] as floats, got {x.dtype}: divide by 255 (engine.prepare does)")
        if x.shape[0] == 0:
            raise ValueError("cannot segment an empty group")
        if callable(consensus):
            consensus = called_once(consensus)
        elif consensus is not None:
            consensus = group_consensus(consensus)

        def attempt() -> GroupPrediction:
            if self._to_measure:
                self._measure_precision(x)
            return self._segment(x, consensus, prototype_prior)

        return in_smaller_chunks(self, attempt)

    def _segment(self, x: Tensor, consensus: Tensor | ConsensusOfLogits | None,
                 prototype_prior: Sequence[np.ndarray] | None) -> GroupPrediction:
        """:meth:`segment` at the current chunk size."""
        whole = x.shape[0] > self.chunk_size  # the maps come chunk by chunk: the consensus is made first
        given = consensus if isinstance(consensus, Tensor) else None
        of_logits = consensus if callable(consensus) else None
        if of_logits is not None and whole:
            given, of_logits = of_logits(self.logits(x)), None
        if given is None and of_logits is None and self.model.use_gim and whole:
            given = consensus_from_logits(self.logits(x))
        prior = None if prototype_prior is None else [torch.as_tensor(p, device=self.device).float()[None]
                                                      for p in prototype_prior]
        maps, sims, prototypes, embeddings = [], [], [], []
        for chunk in self._chunks(x):
            with autocast(self.precision, self.device):
                feats = self.network.run(lambda: self.model.backbone.features(chunk), "features", chunk.shape)
                if of_logits is not None:  # outside the retry of a failed compile: called once
                    logits = self.network.run(lambda: self.model.consensus_logits(chunk, feats[4]), "logits",
                                              chunk.shape)
                    given, of_logits = of_logits(logits.cpu()), None
                out, prob = self.network.run(lambda: self._decode(chunk, feats, given, prior), "decode", chunk.shape)
            if given is None:  # the group's own, from its only chunk
                given = out.consensus
            maps.append(prob[:, 0].float().cpu())
            sims.append(out.similarity.cpu() if out.similarity is not None else torch.full((chunk.shape[0],), float("nan")))
            if out.embeddings is not None:
                embeddings.append(out.embeddings.float().cpu())
            if out.prototypes is not None:
                prototypes.append([p.float().cpu() for p in out.prototypes])
                sums = [p.sum(0, keepdim=True) for p in out.prototypes]
                prior = sums if prior is None else [a + b for a, b in zip(prior, sums)]
        consensus = given
        return GroupPrediction(
            maps=torch.cat(maps).numpy(),
            similarity=torch.cat(sims).numpy(),
            consensus=None if consensus is None else consensus[0].float().cpu().numpy(),
            prototypes=[torch.cat(level).numpy() for level in zip(*prototypes)] if prototypes else None,
            embeddings=torch.cat(embeddings).numpy() if embeddings else None,
        )

    def _decode(self, chunk: Tensor, feats: list[Tensor], consensus: Tensor | None,
                prior: list[Tensor] | None) -> tuple[GICDOutput, Tensor]:
        """The network after the backbone on one normalised chunk [n,3,S,S] (``feats``: its F1..F5): its
        output and its maps [n,1,S,S] (flip-averaged with ``flip``)."""
        out = self.model.decode(chunk, feats, None if consensus is None else consensus.to(self.device),
                                side_outputs=False, prototype_prior=prior)
        return out, self.model.flip_averaged(chunk, out, prior) if self.flip else out.maps

    # -- images ------------------------------------------------------------------------------
    def predict_group(self, images: Iterable[np.ndarray],
                      consensus: Tensor | np.ndarray | None = None) -> list[np.ndarray]:
        """HxWx3 uint8 RGB images (numpy arrays or PIL images, any iterable) of one group -> one HxW float32
        map in [0,1] per image (the group runs at :meth:`size_for` its images)."""
        images = [as_rgb_array(image, i) for i, image in enumerate(images)]
        if len(images) == 0:
            raise ValueError("predict_group needs at least one image")
        size = self.size_for(im.shape for im in images)
        x = torch.stack([self.prepare(im, size) for im in images])
        pred = self.segment(x, consensus)
        return [self.upsample(m, im) for m, im in zip(pred.maps, images)]

    def upsample(self, saliency: np.ndarray, image: np.ndarray | None,
                 size: tuple[int, int] | None = None) -> np.ndarray:
        """[S,S] map -> [H,W] float32 map in [0,1] at the size of ``image`` (or ``size``), as ``upsampling``
        says (:func:`streamcosal.inference.transforms.upsample_map`; ``image`` may be None with ``size`` where
        the upsampling is bilinear)."""
        if np.ndim(saliency) != 2:
            raise ValueError(f"upsample takes one map [S,S] (maps[i]), got shape {np.shape(saliency)}")
        if image is None and (size is None or self.upsampling == "guided"):
            raise ValueError("upsample needs the map's frame (HxWx3 uint8 RGB): guided upsampling follows its edges")
        if image is not None and (np.ndim(image) != 3 or np.shape(image)[2] != 3):
            raise ValueError(f"upsample needs the map's frame as HxWx3 uint8 RGB, got shape {np.shape(image)}")
        return upsample_map(saliency, image, self.upsampling, size)


_engines: dict[EngineSpec, CoSalEngine] = {}
_engines_lock = threading.Lock()


def engine_for(spec: EngineSpec) -> CoSalEngine:
    """The engine of ``spec``, one per spec and process: a worker that runs many units loads the model
    once; inference does not change the engine, so threads share it. Building one sets the process's
    allocator to keep freed memory (:mod:`streamcosal.inference.allocator`: 8-24% faster end to end).

    Raises:
        WeightsError: a checkpoint that cannot be read. ValueError: an impossible device or precision.
    """
    with _engines_lock:
        engine = _engines.get(spec)
        if engine is None:
            keep_freed_memory()  # process-wide and idempotent
            engine = _engines[spec] = CoSalEngine.from_spec(spec)
    return engine

