"""Jigsaw training data: manifests (grouping, round trip), jigsaw masks, seeding, bad data."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import DATA  # noqa: E402

from streamcosal.training.jigsaw import Augmentation, GroupSampler, jigsaw, resize
from streamcosal.training.manifest import GroupingRule, Manifest, build_manifest, load_pair


@pytest.fixture(scope="module")
def data() -> Path:
    if not (DATA / "pascal_coseg").is_dir():
        pytest.fail(f"real test data not found at {DATA}: put the shared data beside the checkout (../shared/data)")
    return DATA


def link_set(root: Path, picks: dict[str, tuple[str, str, int]], *, flat: bool = False) -> Path:
    """A dataset in our layout under ``root`` from real files: group -> (set, source group, n images)."""
    for group, (set_name, source, n) in picks.items():
        for image in sorted((DATA / set_name / "images" / source).glob("*.jpg"))[:n]:
            sub = "" if flat else group
            for kind, src in (("images", image), ("masks", DATA / set_name / "masks" / source / f"{image.stem}.png")):
                dst = root / kind / sub / (f"{group}_{src.name}" if flat else src.name)
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.symlink_to(src)
    return root


def test_jigsaw_mask_keeps_exactly_the_target_pixels() -> None:
    rng = np.random.default_rng(1)
    target = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    mask = (rng.random((50, 70)) > 0.5).astype(np.uint8)
    partner = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    seen = set()
    for seed in range(16):
        rgb, out = jigsaw(target, mask, partner, 33, np.random.default_rng(seed))
        assert rgb.shape == (33, 33, 3) and out.shape == (33, 33)
        replay = np.random.default_rng(seed)
        horizontal, target_first = replay.random() < 0.5, replay.random() < 0.5
        seen.add((horizontal, target_first))
        t_len = 16 if target_first else 17
        t_slice = slice(0, t_len) if target_first else slice(16, 33)
        p_slice = slice(t_len, 33) if target_first else slice(0, 16)
        if horizontal:
            expected = resize(mask, t_len, 33, nearest=True)
            target_half, partner_half = out[:, t_slice], out[:, p_slice]
            assert np.array_equal(rgb[:, t_slice], resize(target, t_len, 33))
        else:
            expected, target_half, partner_half = resize(mask, 33, t_len, nearest=True), out[t_slice], out[p_slice]
            assert np.array_equal(rgb[t_slice], resize(target, 33, t_len))
        assert np.array_equal(target_half, expected)
        assert not partner_half.any(), "the partner's half must be background"
        assert out.sum() == expected.sum()
    assert len(seen) == 4, "all four layouts occur"


def test_manifest_round_trip_given_groups(data: Path, tmp_path: Path) -> None:
    root = link_set(tmp_path / "tiny", {"Cat": ("pascal_coseg", "Cat", 3), "Horse": ("pascal_coseg", "Horse", 2)})
    manifest = build_manifest(root)
    assert {i.group for i in manifest.items} == {"tiny/Cat", "tiny/Horse"}
    assert all(i.cls == -1 and np.isnan(i.confidence) for i in manifest.items)
    again = Manifest.read(manifest.write(tmp_path / "m.parquet"))
    assert len(again.items) == 5
    for a, b in zip(manifest.items, again.items):
        assert (a.image, a.mask, a.group, a.cls) == (b.image, b.mask, b.group, b.cls)
    stored = pq.read_table(tmp_path / "m.parquet").column("image").to_pylist()
    assert stored[0] == "tiny/images/Cat/" + manifest.items[0].image.name  # relative to the manifest
    moved = tmp_path / "elsewhere"  # manifest and data move together: still found
    moved.mkdir()
    (tmp_path / "tiny").rename(moved / "tiny")
    (tmp_path / "m.parquet").rename(moved / "m.parquet")
    assert [i.image for i in Manifest.read(moved / "m.parquet").items] == [
        moved / i.image.relative_to(tmp_path) for i in manifest.items]
    (moved / "tiny").rename(tmp_path / "tiny")  # data gone: a clear error naming the manifest and a file
    with pytest.raises(FileNotFoundError, match=r"manifest .*m\.parquet lists 10 file\(s\) that do not exist"):
        Manifest.read(moved / "m.parquet")


def test_flat_dataset_grouped_by_classifier(data: Path, tmp_path: Path) -> None:
    root = link_set(tmp_path / "flat", {"a": ("oxford_pets", "american_bulldog", 4), "b": ("pascal_coseg", "Chair", 2)},
                    flat=True)
    manifest = build_manifest(root, rule=GroupingRule(min_confidence=0.2, min_group_size=2))
    assert manifest.items, manifest.warnings
    for item in manifest.items:
        assert item.group.startswith("flat/") and item.group.split("/")[1].startswith(f"{item.cls:03d}_")
        assert item.confidence >= 0.2
    counts = {g: len(v) for g, v in manifest.groups().items()}
    assert min(counts.values()) >= 2
    again = Manifest.read(manifest.write(tmp_path / "m.parquet"))
    assert [(i.group, i.cls) for i in again.items] == [(i.group, i.cls) for i in manifest.items]
    assert np.allclose([i.confidence for i in again.items], [i.confidence for i in manifest.items])


def make_sampler(root: Path, seed: int, jigsaw_prob: float = 0.75) -> GroupSampler:
    return GroupSampler(build_manifest(root).groups(), size=64, max_images=3,
                        augment=Augmentation(jigsaw_prob=jigsaw_prob), seed=seed)


def test_same_seed_same_jigsaws(data: Path, tmp_path: Path) -> None:
    root = link_set(tmp_path / "tiny", {"Cat": ("pascal_coseg", "Cat", 4), "Horse": ("pascal_coseg", "Horse", 3)})
    a, b, c = make_sampler(root, 5), make_sampler(root, 5), make_sampler(root, 6)
    assert a.epoch_groups(2, 5) == b.epoch_groups(2, 5)
    xa, ya = a.batch("tiny/Cat", 2, 3)
    xb, yb = b.batch("tiny/Cat", 2, 3)
    xc, _ = c.batch("tiny/Cat", 2, 3)
    assert xa.shape == (3, 3, 64, 64) and ya.shape == (3, 1, 64, 64)
    assert set(np.unique(ya.numpy())) <= {0.0, 1.0}
    assert np.array_equal(xa.numpy(), xb.numpy()) and np.array_equal(ya.numpy(), yb.numpy())
    assert not np.array_equal(xa.numpy(), xc.numpy())


def test_one_group_cannot_jigsaw(data: Path, tmp_path: Path) -> None:
    root = link_set(tmp_path / "one", {"Cat": ("pascal_coseg", "Cat", 3)})
    with pytest.raises(ValueError, match="at least two groups.*one/Cat"):
        make_sampler(root, 0)
    x, _ = make_sampler(root, 0, jigsaw_prob=0.0).batch("one/Cat", 0, 0)
    assert x.shape[0] == 3


def test_missing_mask_and_group_of_one_are_dropped_with_warnings(data: Path, tmp_path: Path) -> None:
    root = link_set(tmp_path / "bad", {"Cat": ("pascal_coseg", "Cat", 3), "Dog": ("pascal_coseg", "Dog", 1)})
    victim = sorted((root / "masks" / "Cat").iterdir())[0]
    victim.unlink()
    with pytest.warns(UserWarning) as record:
        manifest = build_manifest(root)
    text = " ".join(str(w.message) for w in record)
    assert f"bad/Cat/{victim.stem}: no mask" in text
    assert "bad/Dog: a group of one image" in text
    assert [i.image.stem for i in manifest.items] == sorted(p.stem for p in (root / "masks" / "Cat").iterdir())


def test_mask_of_another_size_is_resized_and_non_binary_binarised(data: Path, tmp_path: Path) -> None:
    image = sorted((data / "pascal_coseg" / "images" / "Cat").glob("*.jpg"))[0]
    mask = cv2.imread(str(data / "pascal_coseg" / "masks" / "Cat" / f"{image.stem}.png"), cv2.IMREAD_GRAYSCALE)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), cv2.resize(mask, (mask.shape[1] // 2, mask.shape[0] // 2), interpolation=cv2.INTER_NEAREST))
    with pytest.warns(UserWarning, match=r"small\.png.*resized \(nearest\)"):
        rgb, out = load_pair(image, small)
    assert out.shape == rgb.shape[:2] and set(np.unique(out)) <= {0, 1}
    grey = tmp_path / "grey.png"
    soft = np.zeros_like(mask)
    soft[:, : mask.shape[1] // 3] = 100
    soft[:, mask.shape[1] // 3:] = 200
    cv2.imwrite(str(grey), soft)
    _, out = load_pair(image, grey)
    assert np.array_equal(out, (soft > 128).astype(np.uint8))


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    shutil.copy(broken, tmp_path / "m.png")
    with pytest.raises(OSError, match="broken.jpg"):
        load_pair(broken, tmp_path / "m.png")
