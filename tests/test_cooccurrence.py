"""The class-agnostic embedding consensus: the regions a group shares, on real groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import group_images

from streamcosal import CoSalEngine
from streamcosal.io.imagefile import read_image, read_mask, resize
from streamcosal.model.cooccurrence import common_region_embedding, position_support


@pytest.fixture(scope="module")
def engine() -> CoSalEngine:
    return CoSalEngine.from_pretrained(device="cpu")


def _group(engine: CoSalEngine, paths: list[Path]) -> torch.Tensor:
    return torch.stack([engine.prepare(read_image(p)[0], 224) for p in paths])


def _mask(path: Path) -> np.ndarray:
    return read_mask(path.parent.parent.parent / "masks" / path.parent.name / f"{path.stem}.png")[0] > 128


def test_support_falls_on_the_people_a_group_shares(engine: CoSalEngine, data: Path) -> None:
    """PASCAL's people: ImageNet has no person class, yet the positions that recur across the group are
    the people's: in every image the support above its mean puts more weight inside the person's mask
    than the mask's share of the image (measured: +0.08 to +0.25)."""
    paths = group_images(data, "pascal_coseg", "Person", 8)
    with torch.no_grad():
        head = engine.model.backbone.head_pass(engine.model.backbone.features(engine.normalise(_group(engine, paths)))[4])
    support = position_support(head.features)
    side = head.features.shape[2]
    for path, s in zip(paths, support):
        mask = torch.from_numpy(resize(_mask(path).astype(np.uint8) * 255, side, side)).float() / 255  # its share per cell
        weight = torch.relu(s.view(side, side) - s.mean())
        assert float((weight * mask).sum() / weight.sum()) > float(mask.mean()) + 0.05, path.name


def test_a_confident_group_keeps_its_maps(engine: CoSalEngine, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """blackswan's frames, one class at probability ~1: the shared regions' consensus and the plain mean
    embedding give the same maps within 0.005 mean absolute difference (measured 0.0005)."""
    x = _group(engine, group_images(data, "davis2016", "blackswan", 8))
    shared = engine.segment(x).maps
    monkeypatch.setattr("streamcosal.model.gim.common_region_embedding", lambda features, embedding: embedding.mean(0, keepdim=True))
    plain = engine.segment(x).maps
    assert np.abs(shared - plain).mean() < 0.005


def test_support_of_one_image_and_of_copies() -> None:
    features = torch.rand(3, 16, 4, 4)
    assert torch.equal(position_support(features[:1]), torch.zeros(1, 16))
    copies = position_support(features[:1].expand(3, -1, -1, -1))
    assert torch.allclose(copies, torch.ones_like(copies), atol=1e-5)


def test_a_head_whose_features_are_not_its_embedding_falls_back_to_the_mean() -> None:
    """VGG-16: F5 (512 channels) is not what fc7 (4096) pools: the plain mean embedding."""
    embedding = torch.rand(4, 32)
    assert torch.equal(common_region_embedding(torch.rand(4, 8, 3, 3), embedding), embedding.mean(0, keepdim=True))
