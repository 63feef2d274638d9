"""from_official_checkpoint reproduces the authors' inference (a per-image reference) on random weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import group_images
from PIL import Image

from benchmarks.reference_gicd import CONV_INDEX, ReferenceGICD
from streamcosal.inference.engine import CoSalEngine
from streamcosal.model import GICD, VGG16Backbone, WeightsError

# The authors' VGG-16 network against a reimplementation of their inference: run by `pytest -m slow`.
pytestmark = pytest.mark.slow


def official_state(seed: int) -> dict[str, torch.Tensor]:
    """A gicd_ginet.pth-like state dict (92 tensors, the authors' names) with random weights."""
    torch.manual_seed(seed)
    model = GICD(VGG16Backbone())
    state = {f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}
    state.update(model.decoder.state_dict())
    for k in (4, 3, 2, 1):  # steeper side outputs: maps that vary, and differences that show
        state[f"dslayer{k}.predlayer.0.weight"] = state[f"dslayer{k}.predlayer.0.weight"] * 300
    return state


def torchvision_state_of(gicd_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, index in CONV_INDEX.items():
        for p in ("weight", "bias"):
            out[f"features.{index}.{p}"] = gicd_state[f"backbone.{name}.{p}"].clone()
    for index in (0, 3, 6):
        for p in ("weight", "bias"):
            out[f"classifier.{index}.{p}"] = gicd_state[f"backbone.classifier.{index}.{p}"].clone()
    return out


@pytest.fixture(scope="module")
def group(data: Path) -> torch.Tensor:
    paths = group_images(data, "pascal_coseg", "Horse", 2) + group_images(data, "pascal_coseg", "Cat", 1)
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    return torch.stack([torch.from_numpy(np.array(Image.fromarray(im).resize((224, 224)))).permute(2, 0, 1) for im in images]).float() / 255


@pytest.mark.parametrize("same_vgg", [True, False], ids=["shared-vgg", "separate-consensus-vgg"])
def test_official_checkpoint_matches_the_authors_inference(group: torch.Tensor, tmp_path: Path, same_vgg: bool) -> None:
    state = official_state(seed=1)
    assert len(state) == 92
    torch.manual_seed(2)
    vgg = torchvision_state_of(state) if same_vgg else torchvision.models.vgg16(weights=None).state_dict()
    torch.save(state, tmp_path / "gicd_ginet.pth")
    torch.save(vgg, tmp_path / "vgg16-397923af.pth")

    engine = CoSalEngine.from_official_checkpoint(tmp_path / "gicd_ginet.pth", tmp_path / "vgg16-397923af.pth", device="cpu")
    assert (engine.model.consensus_net is None) == same_vgg
    x = engine.normalise(group)
    with torch.no_grad():
        ours = engine.model(x).maps
    reference = ReferenceGICD(state, vgg)(x.contiguous())
    diff = (ours - reference).abs().max().item()
    assert diff < 1e-4, f"max abs difference {diff}"
    assert reference.std() > 0.005  # the maps are not constant: the comparison means something


def test_a_foreign_file_is_not_taken_for_gicd_ginet(tmp_path: Path) -> None:
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), tmp_path / "vgg.pth")
    with pytest.raises(WeightsError, match="vgg.pth is not the authors' gicd_ginet.pth"):
        CoSalEngine.from_official_checkpoint(tmp_path / "vgg.pth", tmp_path / "vgg.pth", device="cpu")
