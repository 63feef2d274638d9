"""The engine's image transforms: frames to the network's input (its size `input_size_for`,
`prepare_image`), maps back to a frame's size (`upsample_map`: guided or bilinear, `resize_map`) and
to 8 bits (`to_uint8`)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from streamcosal.inference.guided import guided_upsample
from streamcosal.params import Upsampling

MIN_SHRINK = 1.4
"""A group runs above ``input_size`` only at a size its frames' short side is at least this many times
larger than (:func:`input_size_for`): on 14 DAVIS videos 480 -> 288 (1.67x), 405 -> 288 and
360 -> 256 (1.41x) held, 360 -> 288 (1.25x) lost breakdance (0.53 -> 0.12 IoU: its consensus flips)."""


def as_rgb_array(image: object, index: int | None = None) -> np.ndarray:
    """An image given to the engine as HxWx3 uint8 RGB: a PIL image converted from any mode (without
    importing PIL here), an array checked; ``index`` names it in the message.

    Raises:
        ValueError: not an HxWx3 uint8 array or a PIL image, or empty (no rows or no columns).
    """
    which = "image" if index is None else f"image {index}"
    if hasattr(image, "convert") and hasattr(image, "mode"):  # a PIL.Image.Image
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{which}: expected an HxWx3 uint8 RGB numpy array or a PIL image, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{which}: expected an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{which} is empty (shape {image.shape}): give images of at least 1x1 pixels")
    return image


def input_size_for(shapes: Iterable[tuple[int, ...]], smallest: int, largest: int) -> int:
    """The input size S of a group whose frames have these shapes ((H, W, ...) each): the largest
    multiple of 32 from ``smallest`` to ``largest`` that shrinks the median frame's short side by at
    least ``MIN_SHRINK``; ``smallest`` for smaller frames (:meth:`CoSalEngine.size_for` says why)."""
    side = statistics.median_low([min(shape[:2]) for shape in shapes] or [0])
    return max(smallest, min(largest, int(side / MIN_SHRINK) // 32 * 32))


def prepare_image(image: np.ndarray, size: int) -> Tensor:
    """HxWx3 uint8 RGB -> [3,S,S] float in [0,1] on the CPU, S = ``size`` (not yet normalised)."""
    image = as_rgb_array(image)
    shrink = image.shape[0] > size or image.shape[1] > size
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    # In numpy: torch's threaded uint8->float conversion of one small image took ~15 ms on a
    # busy 2-core CPU, numpy's takes 0.5 ms; the values are the same.
    chw = np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32)
    chw /= np.float32(255.0)
    return torch.from_numpy(chw)


def upsample_map(saliency: np.ndarray, image: np.ndarray, upsampling: Upsampling,
                 size: tuple[int, int] | None = None) -> np.ndarray:
    """[S,S] map -> [H,W] float32 map in [0,1] at the size of ``image`` (HxWx3 uint8 RGB, the frame it
    was made from), or at ``size`` when ``image`` is a reduced copy of a frame of that size: edges
    guided by the image (:mod:`streamcosal.inference.guided`) or bilinear."""
    size = size or image.shape[:2]
    if upsampling == "bilinear":
        return resize_map(saliency, size)
    prob = guided_upsample(saliency, image)
    return prob if prob.shape == tuple(size) else resize_map(prob, size)


def resize_map(saliency: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[S,S] map -> [H,W] (bilinear, align_corners=True, as the authors save maps), float32 in [0,1]."""
    t = torch.from_numpy(np.ascontiguousarray(saliency, dtype=np.float32))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=True)[0, 0].clamp_(0, 1).numpy()


def to_uint8(saliency: np.ndarray) -> np.ndarray:
    """Float map in [0,1] -> 8-bit map (rounded)."""
    return np.clip(np.rint(saliency * 255.0), 0, 255).astype(np.uint8)
