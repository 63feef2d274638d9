"""Copy-paste co-saliency composites: the group's object and foreign objects pasted onto a photo.

The paper's jigsaws put a foreign object beside the group's object; copy-paste composites (the
approach of synthetic Co-SOD data built by "context adjustment", and CoCA's rule that every image
holds a foreign salient object) put them in one scene:

- the group's object, cut out by its mask (cropped to the mask's box), and one or two objects of
  other groups, each scaled to a random share of the canvas side and placed at a random position,
  are pasted in a random order onto a background photo resized to SxS;
- the label is the group's object where it is still visible: a distractor pasted over it removes
  those pixels from the mask; the background photo's own objects are background;
- when less than half of the pasted target would stay visible, the target is pasted last, on top
  (a co-salient object must be seen to be learnt).

The other way round (:func:`paste_distractors`): the group's object stays in its own photo and only
the foreign objects are pasted over it, as in a video with a foreign object spliced into every
frame. With ``[augment] copy_paste_native = 0.5`` the training data uses both ways, half each, so
that looking pasted says nothing about being the common object: only the consensus does.

Objects are pasted with their hard masks, so the composite's pixels under the label are exactly the
target's. Every random choice comes from the numpy Generator passed in: the same seed gives the same
composites.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamcosal.io.imagefile import resize

TARGET_SCALE = (0.4, 0.85)
"""The target's longer side as a share of the canvas side."""
DISTRACTOR_SCALE = (0.25, 0.6)
"""A distractor's longer side as a share of the canvas side."""
MIN_VISIBLE = 0.5
"""Below this share of the pasted target left visible, the target is pasted on top."""


class CutOutError(ValueError):
    """An object cannot be cut out of its image (its mask is empty or covers the whole image)."""


@dataclass(frozen=True)
class CutOut:
    """An object cut out by its mask: rgb [h,w,3] uint8 and mask [h,w] {0,1}, cropped to the mask's box."""

    rgb: np.ndarray
    mask: np.ndarray


def cut_out(rgb: np.ndarray, mask: np.ndarray, name: str = "object") -> CutOut:
    """Crop an image [H,W,3] uint8 and its mask [H,W] {0,1} to the mask's bounding box.

    An empty mask (nothing to paste) or one that covers the whole image (a rectangle, not an object
    with an outline) is a :class:`CutOutError` naming ``name``.
    """
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise CutOutError(f"{name}: its mask is empty, there is no object to cut out")
    if ys.size == mask.size:
        raise CutOutError(f"{name}: its mask covers the whole image, there is no outline to cut out")
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return CutOut(np.ascontiguousarray(rgb[y0:y1, x0:x1]), np.ascontiguousarray(mask[y0:y1, x0:x1]))


def _scaled(obj: CutOut, side: int) -> CutOut:
    """The object with its longer side ``side`` pixels long (at least 1 pixel each way)."""
    h, w = obj.mask.shape
    f = side / max(h, w)
    nw, nh = max(1, round(w * f)), max(1, round(h * f))
    return CutOut(resize(obj.rgb, nw, nh), resize(obj.mask, nw, nh, nearest=True))


def paste(canvas: np.ndarray, obj: CutOut, x: int, y: int) -> np.ndarray:
    """Paste ``obj`` with its top-left corner at (x, y) onto canvas [S,S,3] in place.

    Returns the pasted object's footprint on the canvas, [S,S] bool (the object must fit inside).
    """
    h, w = obj.mask.shape
    footprint = np.zeros(canvas.shape[:2], bool)
    footprint[y:y + h, x:x + w] = obj.mask.astype(bool)
    canvas[y:y + h, x:x + w][obj.mask.astype(bool)] = obj.rgb[obj.mask.astype(bool)]
    return footprint


def copy_paste(target: CutOut, distractors: list[CutOut], background: np.ndarray, size: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One composite: ([S,S,3] uint8, [S,S] {0,1} mask of the target's visible pixels).

    target: the group's object; distractors: objects of other groups (pasted over or under the
    target in a random order); background: any photo [H,W,3] uint8 (resized to SxS, so a background
    smaller than the objects is fine).
    """
    canvas = resize(np.ascontiguousarray(background), size, size).copy()
    scales = [TARGET_SCALE] + [DISTRACTOR_SCALE] * len(distractors)
    objects = [_scaled(obj, max(1, round(size * rng.uniform(*scale))))
               for obj, scale in zip([target, *distractors], scales)]
    places = [(int(rng.integers(0, size - o.mask.shape[1] + 1)), int(rng.integers(0, size - o.mask.shape[0] + 1)))
              for o in objects]
    order = rng.permutation(len(objects))
    visible = np.zeros((size, size), bool)
    target_area = int(objects[0].mask.sum())
    for i in order:
        footprint = paste(canvas, objects[i], *places[i])
        visible = visible | footprint if i == 0 else visible & ~footprint
    if visible.sum() < MIN_VISIBLE * target_area:
        visible = paste(canvas, objects[0], *places[0])
    return canvas, visible.astype(np.uint8)


def paste_distractors(photo: np.ndarray, mask: np.ndarray, distractors: list[CutOut], size: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The group's object in its own photo with foreign objects pasted over it.

    photo: [H,W,3] uint8, mask: [H,W] {0,1} of the group's object (not empty); distractors pasted at
    random scales and places. Returns ([S,S,3] uint8, [S,S] {0,1} mask of the object's visible
    pixels); when less than half of it would stay visible, its own pixels are put back on top.
    """
    canvas = resize(np.ascontiguousarray(photo), size, size)
    target = resize(np.ascontiguousarray(mask), size, size, nearest=True).astype(bool)
    original = canvas.copy()
    visible = target.copy()
    for obj in distractors:
        o = _scaled(obj, max(1, round(size * rng.uniform(*DISTRACTOR_SCALE))))
        x = int(rng.integers(0, size - o.mask.shape[1] + 1))
        y = int(rng.integers(0, size - o.mask.shape[0] + 1))
        visible &= ~paste(canvas, o, x, y)
    if visible.sum() < MIN_VISIBLE * target.sum():
        canvas[target] = original[target]
        visible = target
    return canvas, visible.astype(np.uint8)
