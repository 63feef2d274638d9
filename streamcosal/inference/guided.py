"""Edge-aware upsampling of saliency maps: the colour guided filter (He, Sun, Tang, "Guided Image
Filtering", ECCV 2010) with the frame as guide, in its fast form (He and Sun, 2015: the linear
coefficients computed at low resolution, applied at full resolution).

The network's [S,S] map is coarse (its finest decoder level is S/2); bilinear upsampling blurs
its edges across the frame's. The filter models the map, in each window, as a linear function of
the frame's colours, q = A . I + B, fitted to the coarse map at about its own resolution; applying
A and B to the full-resolution frame puts the map's edges on the frame's edges.

Measured (mean over groups; docs/accuracy.md; reports/guided/): on the default's held-out twin,
PASCAL Chair, Dog, Sofa maxF 0.585 -> 0.595, S 0.682 -> 0.689; 4 held-out DAVIS videos at 854x480
IoU of the 0.5-masks 0.676 -> 0.688. Masks drawn wider than the object (Oxford pets' trimap
boundary) lose about 0.02 IoU.
"""

from __future__ import annotations

import cv2
import numpy as np

RADIUS = 5
"""Window radius in pixels of the map's resolution (a window is 11x11 cells of the [S,S] map)."""
EPS = 1e-3
"""Regularisation of the fit (colour variance in [0,1]^2 units): larger flattens A towards 0, so the
map follows the frame's colours less."""


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over (2r+1)x(2r+1) windows, reflected at the borders."""
    return cv2.boxFilter(x, -1, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)


def guided_upsample(saliency: np.ndarray, image: np.ndarray, radius: int = RADIUS, eps: float = EPS) -> np.ndarray:
    """[S,S] map in [0,1] -> [H,W] float32 map in [0,1], edges following the HxWx3 uint8 ``image``.

    The coefficients are fitted where the image's smaller side is S (never enlarged), then
    bilinearly upsampled and applied to the image at full resolution.
    """
    h, w = image.shape[:2]
    scale = max(1.0, min(h, w) / saliency.shape[0])
    low = (max(1, round(w / scale)), max(1, round(h / scale)))
    guide = cv2.split(cv2.resize(image, low, interpolation=cv2.INTER_AREA).astype(np.float32) * np.float32(1 / 255))
    p = cv2.resize(np.asarray(saliency, dtype=np.float32), low, interpolation=cv2.INTER_LINEAR)
    mean_i = [_box(c, radius) for c in guide]
    mean_p = _box(p, radius)
    cov_ip = [_box(c * p, radius) - m * mean_p for c, m in zip(guide, mean_i)]

    def var(i: int, j: int) -> np.ndarray:
        return _box(guide[i] * guide[j], radius) - mean_i[i] * mean_i[j] + (eps if i == j else 0.0)

    # A = (Sigma + eps*1)^-1 cov(I, p) per pixel; Sigma symmetric 3x3, inverted by its cofactors
    rr, rg, rb, gg, gb, bb = var(0, 0), var(0, 1), var(0, 2), var(1, 1), var(1, 2), var(2, 2)
    c_rr, c_rg, c_rb = gg * bb - gb * gb, rb * gb - rg * bb, rg * gb - rb * gg
    c_gg, c_gb, c_bb = rr * bb - rb * rb, rg * rb - rr * gb, rr * gg - rg * rg
    det = rr * c_rr + rg * c_rg + rb * c_rb
    x, y, z = cov_ip
    a = [(c_rr * x + c_rg * y + c_rb * z) / det, (c_rg * x + c_gg * y + c_gb * z) / det,
         (c_rb * x + c_gb * y + c_bb * z) / det]
    b = mean_p - a[0] * mean_i[0] - a[1] * mean_i[1] - a[2] * mean_i[2]

    # at full resolution, in as few passes over the frame as can be (memory, not arithmetic, is the cost):
    # A's three planes upsampled as one image, A . I as one product and one channel sum
    a_full = cv2.resize(cv2.merge([_box(c, radius) * np.float32(1 / 255) for c in a]), (w, h),
                        interpolation=cv2.INTER_LINEAR)
    q = cv2.transform(cv2.multiply(a_full, image, dtype=cv2.CV_32F), np.ones((1, 3), np.float32))
    q += cv2.resize(_box(b, radius), (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(q, 0.0, 1.0, out=q)
