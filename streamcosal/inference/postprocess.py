"""A window's maps to its frames' masks where the maps are: upsampling to each frame's size (guided or
bilinear), the mask, its area and its mean probability run on the engine's device, batched over the
frames of one size; only the masks (one byte a pixel) and two numbers a frame come back to the host.

On a GPU this is what keeps the host from being the bottleneck: the guided filter at full resolution
took 15-25 ms of one CPU core per 854x480 frame. It is the same computation as
:func:`streamcosal.inference.guided.guided_upsample` (the fast guided filter, OpenCV's symmetric
borders, area reduction and half-pixel bilinear resizes) in torch, so it runs on any device; on the
CPU the engine's numpy path stays the default (``PipelineConfig.postprocess_on_device`` chooses).

    done = postprocess(maps, frames, "guided", threshold=0.5, device=torch.device("cuda"))
    done[0].mask      # [H,W] bool on the host; done[0].area, done[0].mean_prob: floats
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from streamcosal.inference.guided import EPS, RADIUS
from streamcosal.params import Upsampling


@dataclass
class FrameMask:
    """One frame's post-processed map: mask [H,W] bool, its area fraction and the mean probability
    over it (0.0 when empty); prob [H,W] float32 only when asked for (probability previews)."""

    mask: np.ndarray
    area: float
    mean_prob: float
    prob: np.ndarray | None = None


def postprocess(maps: Tensor | np.ndarray, images: Sequence[np.ndarray], upsampling: Upsampling, *,
                threshold: float, device: torch.device, keep_probs: bool = False) -> list[FrameMask]:
    """maps [N,S,S] in [0,1] (any device), images N HxWx3 uint8 RGB frames -> N :class:`FrameMask`, the
    work done on ``device``: frames of one size in one batch, uploaded from pinned memory without
    waiting, one synchronisation when the masks come back."""
    maps = torch.as_tensor(maps).to(device, non_blocking=True).float()
    done: list[FrameMask | None] = [None] * len(images)
    sizes: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        sizes.setdefault(image.shape, []).append(i)
    for shape, index in sizes.items():
        batch = torch.from_numpy(np.stack([images[i] for i in index]))
        if device.type == "cuda":
            batch = batch.pin_memory()
        batch = batch.to(device, non_blocking=True)
        prob = upsample_maps(maps[index], batch, upsampling)  # [n,H,W]
        mask = prob >= threshold
        area = mask.flatten(1).float().mean(1)
        covered = mask.flatten(1).sum(1)
        mean_prob = torch.where(covered > 0, (prob * mask).flatten(1).sum(1) / covered.clamp(min=1), 0.0)
        host_masks, host_area, host_mean = mask.cpu().numpy(), area.cpu().tolist(), mean_prob.cpu().tolist()
        host_probs = prob.cpu().numpy() if keep_probs else [None] * len(index)
        for k, i in enumerate(index):
            done[i] = FrameMask(host_masks[k], host_area[k], host_mean[k], host_probs[k])
    return done  # type: ignore[return-value]


def upsample_maps(maps: Tensor, images: Tensor, upsampling: Upsampling) -> Tensor:
    """maps [n,S,S] float, images [n,H,W,3] uint8 on one device -> [n,H,W] float32 in [0,1] at the
    images' size: guided by them, or bilinear as the authors save maps (align_corners=True)."""
    size = tuple(images.shape[1:3])
    if upsampling == "bilinear":
        return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=True)[:, 0].clamp_(0, 1)
    return guided_upsample_maps(maps, images)


def guided_upsample_maps(maps: Tensor, images: Tensor, radius: int = RADIUS, eps: float = EPS) -> Tensor:
    """The fast colour guided filter of :func:`streamcosal.inference.guided.guided_upsample`, batched:
    maps [n,S,S] in [0,1], images [n,H,W,3] uint8 -> [n,H,W] float32 in [0,1]. The coefficients are
    fitted where the images' smaller side is S, then bilinearly upsampled and applied at full size."""
    h, w = images.shape[1:3]
    scale = max(1.0, min(h, w) / maps.shape[-1])
    low = (max(1, round(h / scale)), max(1, round(w / scale)))
    full_rgb = images.permute(0, 3, 1, 2).float().mul_(1 / 255)  # [n,3,H,W]
    guide = _area_resize(full_rgb, low)  # [n,3,h',w']
    p = F.interpolate(maps[:, None], size=low, mode="bilinear", align_corners=False)  # [n,1,h',w']
    mean_i = _box(guide, radius)
    mean_p = _box(p, radius)
    cov_ip = _box(guide * p, radius) - mean_i * mean_p  # [n,3,h',w']
    pairs = guide[:, [0, 0, 0, 1, 1, 2]] * guide[:, [0, 1, 2, 1, 2, 2]]
    var = _box(pairs, radius) - mean_i[:, [0, 0, 0, 1, 1, 2]] * mean_i[:, [0, 1, 2, 1, 2, 2]]
    var[:, [0, 3, 5]] += eps
    rr, rg, rb, gg, gb, bb = var.unbind(1)
    # A = (Sigma + eps*1)^-1 cov(I, p) per pixel; Sigma symmetric 3x3, inverted by its cofactors
    c_rr, c_rg, c_rb = gg * bb - gb * gb, rb * gb - rg * bb, rg * gb - rb * gg
    c_gg, c_gb, c_bb = rr * bb - rb * rb, rg * rb - rr * gb, rr * gg - rg * rg
    det = rr * c_rr + rg * c_rg + rb * c_rb
    x, y, z = cov_ip.unbind(1)
    a = torch.stack([(c_rr * x + c_rg * y + c_rb * z) / det, (c_rg * x + c_gg * y + c_gb * z) / det,
                     (c_rb * x + c_gb * y + c_bb * z) / det], 1)
    b = mean_p[:, 0] - (a * mean_i).sum(1)
    coefficients = _box(torch.cat([b[:, None], a], 1), radius)  # [n,4,h',w']
    full = F.interpolate(coefficients, size=(h, w), mode="bilinear", align_corners=False)
    q = full[:, 0] + (full[:, 1:] * full_rgb).sum(1)
    return q.clamp_(0.0, 1.0)


def _box(x: Tensor, radius: int) -> Tensor:
    """Mean over (2r+1)x(2r+1) windows of [n,c,h,w], mirrored at the borders with the edge repeated
    (OpenCV's BORDER_REFLECT)."""
    h, w = x.shape[-2:]
    x = x.index_select(-2, _mirrored(h, radius, x.device)).index_select(-1, _mirrored(w, radius, x.device))
    return F.avg_pool2d(x, 2 * radius + 1, stride=1)


def _mirrored(n: int, radius: int, device: torch.device) -> Tensor:
    """Indices -r..n+r-1 of a length-n axis reflected into it, edge repeated: fedcba|abcdef|fedcba."""
    k = torch.arange(-radius, n + radius, device=device) % (2 * n)
    return torch.where(k < n, k, 2 * n - 1 - k)


def _area_resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """[n,c,H,W] -> [n,c,h,w] by pixel-area averaging (OpenCV's INTER_AREA when shrinking): each output
    pixel the mean of the input area it covers, fractional pixels weighted by their share."""
    return _area_axis(_area_axis(x, size[0], -2), size[1], -1)


def _area_axis(x: Tensor, out: int, dim: int) -> Tensor:
    """Area-average one axis of ``x`` from its length to ``out`` (no larger) with a [out,in] weight matrix."""
    n = x.shape[dim]
    if n == out:
        return x
    edges = torch.arange(out + 1, device=x.device, dtype=torch.float64) * (n / out)
    left, right = edges[:-1, None], edges[1:, None]
    pixels = torch.arange(n, device=x.device, dtype=torch.float64)[None]
    overlap = (torch.minimum(right, pixels + 1) - torch.maximum(left, pixels)).clamp(min=0)  # [out,in]
    weights = (overlap / overlap.sum(1, keepdim=True)).to(x.dtype)
    return torch.movedim(torch.movedim(x, dim, -1) @ weights.T, -1, dim)
