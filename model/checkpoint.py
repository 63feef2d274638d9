"""Checkpoint formats: ours (decoder weights + metadata) and the authors' ``gicd_ginet.pth``.

Everything is read with ``torch.load(..., weights_only=True)``: a checkpoint can hold tensors and
plain values, never code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .backbones import (
    VGG16_WHERE,
    VGG16Backbone,
    WeightsError,
    _load_strict,
    build_backbone,
    load_weight_file,
    vgg16_weight_path,
)
from .gicd import GICD

FORMAT = "streamcosal.gicd"
FORMAT_VERSION = 1
OFFICIAL_WHERE = ("The authors' released weights (gicd_ginet.pth) are linked from the GICD repository's README "
                  "(github.com/zzhanghub/gicd).")


def save_checkpoint(model: GICD, path: str | os.PathLike, *, input_size: int, version: str,
                    max_input_size: int | None = None, upsampling: str = "guided",
                    extra: dict[str, Any] | None = None) -> None:
    """Write the decoder weights and metadata, atomically (temporary file, then rename).

    input_size: the engine's default input size; max_input_size: the largest it may run a group of
    large frames at (:meth:`streamcosal.inference.engine.CoSalEngine.size_for`; the largest size it trained at);
    upsampling: how the engine brings maps to frame size, "guided" or "bilinear"
    (:mod:`streamcosal.inference.guided`; checkpoints without it run bilinear, as they were measured).
    """
    if upsampling not in ("guided", "bilinear"):
        raise ValueError(f"unknown upsampling {upsampling!r}: use guided or bilinear")
    state = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "backbone": model.backbone.name,
        "input_size": int(input_size),
        "max_input_size": int(max(input_size, max_input_size or 0)),
        "upsampling": upsampling,
        "use_gim": model.use_gim,
        "use_arm": model.use_arm,
        "embedding_share": float(model.embedding_share),
        "prototype_gate": float(model.prototype_gate),
        "version": version,
        "decoder": {k: v.detach().cpu().clone() for k, v in model.decoder.state_dict().items()},
        "extra": extra or {},
    }
    atomic_torch_save(state, Path(path))


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save so that ``path`` appears whole or not at all (:func:`streamcosal.storage.files.atomic_write`)."""
    from streamcosal.storage.files import atomic_write

    with atomic_write(path) as f:
        torch.save(obj, f)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate one of our checkpoints; errors name the file and what is wrong. Settings that
    older checkpoints lack are filled in with what those were made and measured with (their input size
    only, bilinear upsampling, the paper's GIM, no gate)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(f"cannot read checkpoint {path} ({err.__class__.__name__}): the file is corrupted "
                           "or not a torch file") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        hint = ""
        if isinstance(state, dict) and "toplayer.0.weight" in state:
            hint = " It looks like the authors' gicd_ginet.pth: use from_official_checkpoint."
        elif isinstance(state, dict) and "optimizer" in state and "decoder" in state:
            hint = f" It is a training state (for --resume): the trained model is {path.parent / 'best.pt'}."
        raise WeightsError(f"{path} is not a streamcosal GICD checkpoint.{hint}")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise WeightsError(f"{path} has checkpoint format {state['format_version']}; this streamcosal reads "
                           f"up to {FORMAT_VERSION}: upgrade streamcosal")
    lacking = [key for key in ("backbone", "decoder", "input_size", "use_gim", "use_arm") if key not in state]
    if lacking:
        raise WeightsError(f"{path} lacks {', '.join(lacking)}: a damaged or hand-edited checkpoint; save the model "
                           "again with save_checkpoint")
    state.setdefault("max_input_size", state["input_size"])
    state.setdefault("upsampling", "bilinear")
    state.setdefault("embedding_share", 0.0)
    state.setdefault("prototype_gate", 0.0)
    return state


def load_checkpoint(path: str | os.PathLike, backbone_weights: str | os.PathLike | None = None) -> tuple[GICD, dict[str, Any]]:
    """Build the GICD of a checkpoint of ours: its backbone (ImageNet weights) and its decoder."""
    state = read_checkpoint(path)
    model = GICD(build_backbone(state["backbone"], backbone_weights), use_gim=state["use_gim"], use_arm=state["use_arm"],
                 embedding_share=float(state["embedding_share"]), prototype_gate=float(state["prototype_gate"]))
    try:
        model.decoder.load_state_dict(state["decoder"], strict=True)
    except RuntimeError as err:
        raise WeightsError(f"decoder weights in {path} do not fit backbone {state['backbone']!r}: "
                           f"{str(err).splitlines()[0]}") from err
    return model.eval(), state


def load_official(gicd_path: str | os.PathLike, vgg16_path: str | os.PathLike | None) -> GICD:
    """The authors' GICD from ``gicd_ginet.pth`` plus torchvision's ``vgg16-397923af.pth``.

    The backbone and its own-logits head come from gicd_ginet.pth; the consensus classifier is
    torchvision's VGG-16. When both hold the same VGG-16 weights (the released files do: the
    backbone was frozen) the backbone runs once per image; otherwise the consensus classifier
    runs as a separate pass.
    """
    gicd_path = Path(gicd_path)
    state = load_weight_file(gicd_path, "GICD (gicd_ginet.pth)", OFFICIAL_WHERE)
    backbone_state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    decoder_state = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    if len(state) != 92 or len(backbone_state) != 32:
        raise WeightsError(f"{gicd_path} is not the authors' gicd_ginet.pth: expected 92 tensors (32 under "
                           f"'backbone.'), got {len(state)} ({len(backbone_state)} under 'backbone.')")
    backbone = VGG16Backbone()
    _load_strict(backbone, backbone_state, str(gicd_path))
    vgg_path = vgg16_weight_path(vgg16_path)
    consensus_net = VGG16Backbone()
    consensus_net.load_torchvision(load_weight_file(vgg_path, "VGG-16", VGG16_WHERE), str(vgg_path))
    same = all(torch.equal(a, b) for a, b in zip(backbone.state_dict().values(), consensus_net.state_dict().values()))
    model = GICD(backbone, consensus_net=None if same else consensus_net)
    _load_strict(model.decoder, decoder_state, str(gicd_path))
    return model.eval()

