"""Validation during training: held-out groups as they are, jigsaw composites of held-out videos and
their plain frames (``VAL_KINDS``), scored by maxF, S-measure and MAE (pysodmetrics) each epoch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import py_sod_metrics as sod
import torch
from torch import Tensor

from streamcosal.inference.transforms import resize_map, to_uint8
from streamcosal.io.datasets import load_dataset
from streamcosal.io.imagefile import read_image, read_mask
from streamcosal.model import GICD
from streamcosal.training.config import ConfigError, TrainConfig
from streamcosal.training.jigsaw import jigsaw, resize
from streamcosal.training.manifest import load_pair

VAL_KINDS = ("groups", "composites", "frames")
"""Validation parts: held-out groups as they are, jigsaw composites of held-out videos, their plain frames."""
VAL_METRICS = ("maxF", "S", "MAE")


@dataclass
class ValGroup:
    """One validation group: images [N,3,S,S] uint8 and N uint8 masks (0/255) at their own size."""

    kind: str
    name: str
    images: Tensor
    masks: list[np.ndarray]


def evenly(items: list[Any], n: int) -> list[Any]:
    """At most n items, evenly spaced (all when n == 0 or n >= len)."""
    if n == 0 or n >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def held_out_samples(config: TrainConfig, key: str) -> list[tuple[Path, Path]]:
    """(image, mask) of a held-out ``"<set>/<group>"``, sorted; an error naming what is missing."""
    set_name, group = key.split("/", 1)
    if not (config.data.root / set_name).is_dir():
        raise ConfigError(f"{config.source}: [validation] {key!r}: no set {set_name!r} under {config.data.root}")
    dataset = load_dataset(config.data.root / set_name, layout="ours")
    if group not in dataset.groups:
        raise ConfigError(f"{config.source}: [validation] group {key!r} not found in {dataset.root} "
                          f"(groups: {', '.join(dataset.groups)})")
    samples = [(s.image, s.mask) for s in dataset.groups[group] if s.mask is not None]
    if not samples:
        raise ConfigError(f"{config.source}: [validation] group {key!r} has no image with a mask")
    return samples  # type: ignore[return-value]


def validation_set(config: TrainConfig, *, max_images: int | None = None,
                   max_frames: int | None = None, size: int | None = None) -> list[ValGroup]:
    """The held-out groups, the held-out videos' plain frames and their jigsaw composites, made at
    ``size`` (by default the config's input size).

    A composite joins each frame with a frame of another held-out video, drawn with
    ``seed`` (the target video's object is the only foreground). max_images / max_frames override
    the config's (0 = all).
    """
    v, s, seed = config.validation, size or config.model.input_size, config.train.seed
    max_images = v.max_images if max_images is None else max_images
    max_frames = v.max_frames if max_frames is None else max_frames
    out = []
    for key in v.groups:
        pairs = evenly(held_out_samples(config, key), max_images)
        out.append(_plain_group("groups", key, pairs, s))
    videos = {key: evenly(held_out_samples(config, key), max_frames) for key in v.videos}
    for key, pairs in videos.items():
        out.append(_plain_group("frames", key, pairs, s))
    names = list(videos)
    for vi, key in enumerate(names):
        images, masks = [], []
        for fi, (image, mask) in enumerate(videos[key]):
            rng = np.random.default_rng([seed, 7, vi, fi])
            partner_video = names[(vi + 1 + int(rng.integers(len(names) - 1))) % len(names)]
            partner, _ = read_image(videos[partner_video][int(rng.integers(len(videos[partner_video])))][0])
            rgb, m = jigsaw(*load_pair(image, mask), partner, s, rng)
            images.append(rgb)
            masks.append(m * 255)
        out.append(ValGroup("composites", key, _to_tensor(images), masks))
    return out


def _plain_group(kind: str, key: str, pairs: list[tuple[Path, Path]], size: int) -> ValGroup:
    images = [resize(read_image(image)[0], size, size) for image, _ in pairs]
    masks = [np.where(read_mask(mask)[0] > 128, 255, 0).astype(np.uint8) for _, mask in pairs]
    return ValGroup(kind, key, _to_tensor(images), masks)


def _to_tensor(images: list[np.ndarray]) -> Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


# -- validation ---------------------------------------------------------------------------------

def score(predict: Callable[[Tensor], np.ndarray], val: list[ValGroup]) -> dict[str, float]:
    """Metrics per validation kind: ``"<kind>_<maxF|S|MAE>"`` plus ``"score"``.

    predict: one group's images [N,3,S,S] uint8 -> maps [N,S,S] float in [0,1]. Maps are resized to
    each mask's size; pysodmetrics runs over all images of a kind together (as the field scores a
    dataset), with the conventions of :mod:`streamcosal.evaluation` but only the three metrics
    validation needs (its full meter's weighted F-measure alone tripled a validation's time).
    score = mean of groups_maxF and composites_maxF (those present).
    """
    meters: dict[str, _Meters] = {}
    for group in val:
        meters.setdefault(group.kind, _Meters()).step(predict(group.images), group.masks)
    out: dict[str, float] = {}
    for kind in VAL_KINDS:
        if kind in meters:
            out.update({f"{kind}_{name}": value for name, value in meters[kind].results().items()})
    parts = [out[f"{k}_maxF"] for k in ("groups", "composites") if f"{k}_maxF" in out]
    out["score"] = float(np.mean(parts)) if parts else float("nan")
    return out


def score_groups(predict: Callable[[Tensor], np.ndarray], val: list[ValGroup]) -> list[dict[str, Any]]:
    """:func:`score`'s metrics for each validation group on its own: one row per group, ``kind``,
    ``group`` (``"<set>/<name>"``), ``images``, ``maxF``, ``S``, ``MAE``, in ``val``'s order."""
    rows = []
    for group in val:
        meters = _Meters()
        meters.step(predict(group.images), group.masks)
        rows.append({"kind": group.kind, "group": group.name, "images": len(group.masks), **meters.results()})
    return rows


class _Meters:
    """maxF (beta^2 0.3, dynamic thresholds), S-measure and MAE over the maps stepped in, pysodmetrics."""

    def __init__(self) -> None:
        self.fm = sod.FmeasureV2({"fm": sod.FmeasureHandler(with_dynamic=True, with_adaptive=False, beta=0.3)})
        self.sm, self.mae = sod.Smeasure(alpha=0.5), sod.MAE()

    def step(self, maps: np.ndarray, masks: list[np.ndarray]) -> None:
        """maps [N,S,S] in [0,1], each resized to its uint8 mask's size (0/255)."""
        for saliency, mask in zip(maps, masks):
            pred = to_uint8(resize_map(saliency, mask.shape))
            for metric in (self.fm, self.sm, self.mae):
                metric.step(pred, mask)

    def results(self) -> dict[str, float]:
        return {"maxF": float(self.fm.get_results()["fm"]["dynamic"].max()),
                "S": float(self.sm.get_results()["sm"]), "MAE": float(self.mae.get_results()["mae"])}


def model_predictor(model: GICD, device: torch.device, flip: bool = False) -> Callable[[Tensor], np.ndarray]:
    """predict() for :func:`score`: the model in eval mode, one forward per group, fp32; with
    ``flip`` also the mirrored group against the same consensus, the maps averaged (as the engine)."""
    @torch.no_grad()
    def predict(images: Tensor) -> np.ndarray:
        x = model.backbone.preprocess(images.to(device).float() / 255.0)
        out = model(x, side_outputs=False)
        maps = model.flip_averaged(x, out) if flip else out.maps
        return maps[:, 0].float().cpu().numpy()
    return predict


def center_prior(images: Tensor, sigma: float = 0.25) -> np.ndarray:
    """The center-prior floor: the same Gaussian (std ``sigma`` of the side) for every image, [N,S,S]."""
    n, _, h, w = images.shape
    yy, xx = np.mgrid[0:h, 0:w]
    g = np.exp(-(((yy - (h - 1) / 2) / (sigma * h)) ** 2 + ((xx - (w - 1) / 2) / (sigma * w)) ** 2) / 2)
    return np.repeat(g[None].astype(np.float32), n, axis=0)


# -- training -----------------------------------------------------------------------------------
