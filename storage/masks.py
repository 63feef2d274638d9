"""Masks as stored in the results: COCO RLE, summary statistics, small probability PNGs."""

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as coco_mask

BBox = tuple[int, int, int, int]  # x, y, width, height in pixels (COCO order)


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE of a binary mask.

    Args:
        mask: [H, W] bool, or an integer/float array holding only 0 and 1.

    Returns:
        ``{"size": [H, W], "counts": bytes}`` as made by ``pycocotools.mask.encode``.
    """
    mask = _as_bool_mask(mask)
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": bytes(rle["counts"])}


def decode_mask(row_or_rle: Mapping[str, Any]) -> np.ndarray:
    """The [H, W] bool mask of an RLE dict, or of a results row holding one under ``mask_rle``.

    Accepts rows from ``pyarrow.Table.to_pylist()``, pandas rows and the dicts of ``encode_mask``.
    """
    rle = row_or_rle["mask_rle"] if "mask_rle" in row_or_rle else row_or_rle
    if not isinstance(rle, Mapping) or "counts" not in rle or "size" not in rle:
        raise ValueError(
            "decode_mask needs a COCO RLE dict with 'size' and 'counts' or a results row with "
            f"'mask_rle'; got {type(row_or_rle).__name__} with keys {list(row_or_rle.keys())}"
        )
    counts = rle["counts"]
    counts = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    size = [int(s) for s in rle["size"]]
    return coco_mask.decode({"size": size, "counts": counts}).astype(bool)


def mask_stats(
    prob: np.ndarray, threshold: float = 0.5
) -> tuple[np.ndarray, BBox | None, float, float]:
    """Binarise a probability map and summarise the mask.

    Args:
        prob: [H, W] float probabilities in [0, 1].
        threshold: a pixel is in the mask when ``prob >= threshold``.

    Returns:
        mask: [H, W] bool.
        bbox: (x, y, w, h) of the smallest box holding the mask (w = last column - x + 1), or
            None when the mask is empty.
        area_fraction: mask pixels / (H * W).
        mean_prob: mean of ``prob`` over the mask pixels; 0.0 when the mask is empty.
    """
    prob = np.asarray(prob)
    if prob.ndim != 2 or prob.size == 0:
        raise ValueError(
            f"mask_stats needs a non-empty [H, W] probability map, got shape {prob.shape}"
        )
    if not np.all(np.isfinite(prob)) or prob.min() < 0.0 or prob.max() > 1.0:
        raise ValueError(
            "mask_stats needs finite probabilities in [0, 1] (apply sigmoid to logits first); "
            f"got values from {prob.min()} to {prob.max()}"
        )
    mask = prob >= threshold
    bbox = mask_bbox(mask)
    if bbox is None:
        return mask, None, 0.0, 0.0
    return mask, bbox, float(mask.mean()), float(prob[mask].mean())


def mask_bbox(mask: np.ndarray) -> BBox | None:
    """(x, y, w, h) of the smallest box holding the [H, W] bool ``mask``; None when it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def encode_prob_png(prob: np.ndarray, max_side: int = 128) -> bytes:
    """A small 8-bit PNG of a probability map, for previews stored next to the masks.

    Args:
        prob: [H, W] float probabilities in [0, 1].
        max_side: the longer side of the stored image; smaller maps are stored as they are.
    """
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 2:
        raise ValueError(
            f"encode_prob_png needs an [H, W] probability map, got shape {prob.shape}"
        )
    scale = max_side / max(prob.shape)
    if scale < 1.0:
        size = (max(1, round(prob.shape[1] * scale)), max(1, round(prob.shape[0] * scale)))
        prob = cv2.resize(prob, size, interpolation=cv2.INTER_AREA)
    image = np.round(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8)
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {image.shape} probability map as PNG")
    return png.tobytes()


def decode_prob_png(png: bytes) -> np.ndarray:
    """[h, w] float32 probabilities in [0, 1] of ``encode_prob_png`` bytes (at the stored size)."""
    image = cv2.imdecode(np.frombuffer(png, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError("prob_png bytes are not a PNG image")
    return image.astype(np.float32) / 255.0


def _as_bool_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be [H, W], got shape {mask.shape}")
    if mask.dtype == bool:
        return mask
    if not np.isin(mask, (0, 1)).all():
        raise ValueError(
            f"a {mask.dtype} mask must hold only 0 and 1, got values {np.unique(mask)[:5]}...; "
            "binarise it first, e.g. mask > 0 for 0/255 PNG masks"
        )
    return mask.astype(bool)
