"""TensorFlow same padding folded into stride-2 kernels: the same outputs without the padded copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import group_images
from PIL import Image
from timm.layers import Conv2dSame
from torch import nn

import streamcosal.inference.engine as engine_module
from streamcosal.inference.engine import CoSalEngine
from streamcosal.inference.samepad import fold_same_padding


@pytest.mark.parametrize(("k", "groups"), [(3, 1), (3, 16), (5, 16)])
def test_a_folded_convolution_equals_timms_same_padding_on_even_inputs(k: int, groups: int) -> None:
    torch.manual_seed(0)
    same = nn.Sequential(Conv2dSame(16, 32 if groups == 1 else 16, k, stride=2, groups=groups)).eval()
    folded = fold_same_padding(same)
    assert isinstance(folded[0], nn.Conv2d) and not isinstance(folded[0], Conv2dSame)
    assert folded[0].kernel_size == (k + 1, k + 1) and isinstance(same[0], Conv2dSame)  # a copy
    with torch.no_grad():
        for size in (14, 56, 112):
            x = torch.randn(2, 16, size, size)
            torch.testing.assert_close(folded(x), same(x), rtol=1e-5, atol=1e-6)
        odd = torch.randn(2, 16, 15, 15)  # odd inputs pad symmetrically in TensorFlow: not foldable this way
        assert folded(odd).shape != same(odd).shape or not torch.allclose(folded(odd), same(odd))


def test_the_default_engine_folds_them_with_the_same_maps(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default model's five stride-2 convolutions (stem and four depthwise): no Conv2dSame left in
    the engine, and its maps on real frames at 224 and 288 equal those with timm's padding (fp32)."""
    images = [np.asarray(Image.open(p).convert("RGB")) for p in group_images(data, "davis2016", "goat", 4)]
    folded = CoSalEngine.from_pretrained(device="cpu", precision="fp32")
    monkeypatch.setattr(engine_module, "fold_same_padding", lambda model: model)
    padded = CoSalEngine.from_pretrained(device="cpu", precision="fp32")
    assert not any(isinstance(m, Conv2dSame) for m in folded.model.modules())
    assert sum(isinstance(m, Conv2dSame) for m in padded.model.modules()) == 5
    for size in (224, 288):
        x = torch.stack([folded.prepare(im, size) for im in images])
        np.testing.assert_allclose(folded.segment(x).maps, padded.segment(x).maps, atol=1e-5)
