"""Copy-paste composites: the mask is exactly the target's visible pixels, occlusion, seeds, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DATA

from streamcosal.io.imagefile import resize
from streamcosal.training.copypaste import CutOut, CutOutError, copy_paste, cut_out, paste_distractors
from streamcosal.training.jigsaw import Augmentation, GroupSampler
from streamcosal.training.manifest import ManifestItem

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def solid(colour: tuple[int, int, int], h: int, w: int) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (h, w, 3)).copy()


def disc(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2 < 1).astype(np.uint8)


def objects() -> tuple[CutOut, list[CutOut]]:
    target = cut_out(solid(RED, 90, 60), disc(90, 60))
    return target, [cut_out(solid(BLUE, 50, 70), disc(50, 70)), cut_out(solid(GREEN, 40, 40), np.ones((40, 40), np.uint8) * np.tri(40, dtype=np.uint8))]


def test_mask_is_exactly_the_visible_target_pixels_and_occlusion_removes_them() -> None:
    target, distractors = objects()
    occluded = 0
    for seed in range(40):
        rgb, mask = copy_paste(target, distractors, solid((0, 0, 0), 100, 100), 128, np.random.default_rng(seed))
        assert rgb.shape == (128, 128, 3) and mask.shape == (128, 128) and set(np.unique(mask)) <= {0, 1}
        red = np.all(rgb == RED, axis=-1)
        assert np.array_equal(mask.astype(bool), red), f"seed {seed}: mask differs from the visible target pixels"
        assert mask.sum() > 0
        # the target as pasted alone: its footprint is at least the visible part
        alone, _ = copy_paste(target, [], solid((0, 0, 0), 100, 100), 128, np.random.default_rng(seed))
        occluded += int(np.all(rgb == BLUE, axis=-1).any() and mask.sum() < np.all(alone == RED, axis=-1).sum())
    assert occluded > 0, "no seed pasted a distractor over the target: occlusion was never exercised"


def test_distractors_pasted_over_the_objects_own_photo_leave_exactly_its_visible_pixels() -> None:
    _, distractors = objects()
    mask = disc(96, 96)  # the canvas size: resizing the photo does not blend its edge
    photo = np.where(mask[..., None] == 1, np.array(RED, np.uint8), np.uint8(0))
    occluded = 0
    for seed in range(30):
        rgb, label = paste_distractors(photo, mask, distractors, 96, np.random.default_rng(seed))
        red = np.all(rgb == RED, axis=-1)
        assert np.array_equal(label.astype(bool), red), f"seed {seed}: mask differs from the visible object"
        assert label.sum() >= 0.5 * resize(mask, 96, 96, nearest=True).sum()
        occluded += int(label.sum() < resize(mask, 96, 96, nearest=True).sum())
    assert occluded > 0, "no distractor ever covered the object"


def test_the_same_seed_gives_the_same_composite() -> None:
    target, distractors = objects()
    background = solid((10, 20, 30), 64, 80)
    a = copy_paste(target, distractors, background, 96, np.random.default_rng([3, 1]))
    b = copy_paste(target, distractors, background, 96, np.random.default_rng([3, 1]))
    c = copy_paste(target, distractors, background, 96, np.random.default_rng([4, 1]))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_bad_sources_are_named_and_small_backgrounds_are_fine() -> None:
    with pytest.raises(CutOutError, match="cat.png: its mask is empty"):
        cut_out(solid(RED, 20, 20), np.zeros((20, 20), np.uint8), "cat.png")
    with pytest.raises(CutOutError, match="dog.png: its mask covers the whole image"):
        cut_out(solid(RED, 20, 20), np.ones((20, 20), np.uint8), "dog.png")
    target, distractors = objects()
    rgb, mask = copy_paste(target, distractors, solid((0, 0, 0), 8, 5), 64, np.random.default_rng(0))
    assert rgb.shape == (64, 64, 3) and mask.any()


def real_items(set_name: str, group: str, n: int) -> list[ManifestItem]:
    images = sorted((DATA / set_name / "images" / group).glob("*.jpg"))[:n]
    return [ManifestItem(p, DATA / set_name / "masks" / group / f"{p.stem}.png", f"{set_name}/{group}") for p in images]


def test_sampler_mixes_copy_paste_composites_of_real_objects_seeded() -> None:
    groups = {"cat": real_items("pascal_coseg", "Cat", 3), "horse": real_items("pascal_coseg", "Horse", 3)}
    extra = real_items("sod", "sod", 3)
    aug = Augmentation(jigsaw_prob=0.0, copy_paste_prob=1.0, copy_paste_native=0.5, hflip=False, crop_scale=1.0, colour=0.0)
    sampler = GroupSampler(groups, size=96, max_images=3, augment=aug, seed=5, extra=extra)
    x, y = sampler.batch("cat", 0, 0)
    x2, y2 = sampler.batch("cat", 0, 0)
    assert x.shape == (3, 3, 96, 96) and y.shape == (3, 1, 96, 96)
    assert np.array_equal(x.numpy(), x2.numpy()) and np.array_equal(y.numpy(), y2.numpy())
    for mask in y.numpy():
        assert 0.005 < mask.mean() < 0.75
    # the composite holds more than the target: pixels outside the label are not uniform
    assert float(x[0][:, y[0, 0] == 0].std()) > 0.05


def test_multi_scale_draws_one_size_per_step_seeded() -> None:
    groups = {"cat": real_items("pascal_coseg", "Cat", 3), "horse": real_items("pascal_coseg", "Horse", 3)}
    aug = Augmentation(jigsaw_prob=0.5, copy_paste_prob=0.5, sizes=[64, 96, 128])
    sampler = GroupSampler(groups, size=224, max_images=2, augment=aug, seed=3)
    sizes = []
    for step in range(12):
        x, y = sampler.batch("cat", 0, step)
        assert x.shape[2] == x.shape[3] and y.shape[2:] == x.shape[2:] and y.any()
        sizes.append(x.shape[2])
        x2, _ = sampler.batch("cat", 0, step)
        assert np.array_equal(x.numpy(), x2.numpy())
    assert set(sizes) == {64, 96, 128}  # every size drawn, never the sampler's own 224
    with pytest.raises(ValueError, match=r"sizes \[100\] are not multiples of 32"):
        Augmentation(sizes=[64, 100])


def test_a_target_with_an_empty_mask_falls_back_with_a_warning(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    cats = real_items("pascal_coseg", "Cat", 2)
    empty = tmp_path / "empty.png"
    Image.fromarray(np.zeros(Image.open(cats[0].mask).size[::-1], np.uint8)).save(empty)
    groups = {"cat": [ManifestItem(cats[0].image, empty, "cat"), cats[1]], "horse": real_items("pascal_coseg", "Horse", 2)}
    aug = Augmentation(jigsaw_prob=0.0, copy_paste_prob=1.0, hflip=False, crop_scale=1.0, colour=0.0)
    sampler = GroupSampler(groups, size=64, max_images=2, augment=aug, seed=0)
    others = np.flatnonzero(sampler._owner != sampler.names.index("cat"))
    with pytest.warns(UserWarning, match="empty.png: its mask is empty"):
        rgb, mask = sampler.sample(groups["cat"][0], others, np.random.default_rng(0))
    assert rgb.shape == (64, 64, 3) and mask.sum() == 0


def test_instance_groups_show_one_real_object_pasted_onto_other_photos() -> None:
    """A share of the steps is one SOD object seen max_images times: each view holds its pixels (its mask the
    pasted object), on different backgrounds; the other steps' batches are those of a sampler without them."""
    groups = {"cat": real_items("pascal_coseg", "Cat", 3), "horse": real_items("pascal_coseg", "Horse", 3)}
    extra = real_items("sod", "sod", 4)
    aug = Augmentation(jigsaw_prob=0.5, copy_paste_prob=0.5, hflip=False, crop_scale=1.0, colour=0.0,
                       instance_groups=0.5)
    sampler = GroupSampler(groups, size=96, max_images=4, augment=aug, seed=2, extra=extra)
    plain = GroupSampler(groups, size=96, max_images=4, augment=aug.model_copy(update={"instance_groups": 0.0}),
                         seed=2, extra=extra)
    instance_steps = 0
    for step in range(12):
        x, y = sampler.batch("cat", 0, step)
        x_plain, y_plain = plain.batch("cat", 0, step)
        if torch.equal(x, x_plain) and torch.equal(y, y_plain):
            assert x.shape[0] == 3  # the cat group's three images
            continue
        instance_steps += 1
        assert x.shape == (4, 3, 96, 96) and y.shape == (4, 1, 96, 96)
        assert all(0 < float(m.mean()) < 0.9 for m in y)  # the object in every view, never the whole canvas
        backgrounds = [float((img * (1 - m)).sum() / (1 - m).sum()) for img, m in zip(x, y)]
        assert len({round(b, 3) for b in backgrounds}) > 1  # pasted onto different photos
        colours = torch.stack([(img * m).flatten(1).sum(1) / m.sum() for img, m in zip(x, y)])  # [4,3]
        assert float((colours - colours.mean(0)).abs().max()) < 0.15  # one object in every view
        again, _ = sampler.batch("cat", 0, step)
        assert torch.equal(again, x)  # seeded
    assert 2 <= instance_steps <= 10  # about half of 12


def test_instance_groups_need_images_outside_the_groups() -> None:
    groups = {"cat": real_items("pascal_coseg", "Cat", 3), "horse": real_items("pascal_coseg", "Horse", 3)}
    aug = Augmentation(jigsaw_prob=0.5, instance_groups=1.0)
    sampler = GroupSampler(groups, size=64, max_images=3, augment=aug, seed=0)  # no extra: training groups only
    x, _ = sampler.batch("cat", 0, 0)
    assert x.shape[0] == 3
