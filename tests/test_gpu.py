"""The CUDA paths: the engine on a GPU against the CPU fp32 engine, faiss-gpu, a video end to end.

Marked ``gpu`` and deselected by default (``-m "not gpu"`` in pyproject's addopts; CI has no
GPU): run them where one is lent with ``python -m pytest -m gpu`` (``benchmarks/gpu.sh`` does, then
the GPU benchmark). On a machine without CUDA they fail rather than skip, so a GPU run that
silently tested nothing cannot pass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import group_images
from PIL import Image
from video_fixtures import encode_video, load_frames

from streamcosal.inference.engine import CoSalEngine
from streamcosal.inference.precision import gpu_has_native_bf16
from streamcosal.inference.weights import default_weights_path
from streamcosal.io.open import open_source
from streamcosal.model import load_checkpoint
from streamcosal.run.pipeline import run_pipeline
from streamcosal.run.records import PipelineConfig
from streamcosal.storage import ConsensusStore, decode_mask, read_results

pytestmark = pytest.mark.gpu

# CUDA fp32 convolutions may use TF32 (torch's default for cuDNN convolutions): maps then differ
# from the CPU's by a little more than rounding.
FP32_MEAN_ABS, FP32_MAX_ABS = 2e-3, 5e-2
HALF_MEAN_ABS = 0.01  # bf16 / fp16 against CPU fp32, as on CPUs with native bf16


@pytest.fixture(scope="module", autouse=True)
def cuda() -> None:
    assert torch.cuda.is_available(), "the gpu tests need a CUDA GPU (run them with -m gpu only where one is)"


@pytest.fixture(scope="module")
def images(data: Path) -> list[np.ndarray]:
    paths = group_images(data, "pascal_coseg", "Horse", 4) + group_images(data, "davis2016", "goat", 4)
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


@pytest.fixture(scope="module")
def cpu_maps(images: list[np.ndarray]) -> list[np.ndarray]:
    return CoSalEngine.from_pretrained(device="cpu", precision="fp32").predict_group(images)


def mean_max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[float, float]:
    return float(np.mean([np.abs(x - y).mean() for x, y in zip(a, b)])), float(max(np.abs(x - y).max() for x, y in zip(a, b)))


def test_cuda_fp32_equals_cpu_fp32(images: list[np.ndarray], cpu_maps: list[np.ndarray]) -> None:
    engine = CoSalEngine.from_pretrained(device="cuda", precision="fp32")
    assert engine.device.type == "cuda"
    mean, worst = mean_max_diff(engine.predict_group(images), cpu_maps)
    assert mean < FP32_MEAN_ABS and worst < FP32_MAX_ABS, f"CUDA fp32 vs CPU fp32: mean {mean:.2e}, max {worst:.2e}"


@pytest.mark.parametrize("precision", ["bf16", "fp16", "auto"])
def test_cuda_half_precisions_are_close(images: list[np.ndarray], cpu_maps: list[np.ndarray], precision: str) -> None:
    if precision == "bf16" and not gpu_has_native_bf16(torch.device("cuda")):
        pytest.fail("this GPU has no bf16: run the gpu tests on one that has (Ampere or newer)")
    engine = CoSalEngine.from_pretrained(device="cuda", precision=precision)  # type: ignore[arg-type]
    if precision == "auto":
        assert engine.precision == ("bf16" if gpu_has_native_bf16(engine.device) else "fp16")
    mean, _ = mean_max_diff(engine.predict_group(images), cpu_maps)
    assert mean < HALF_MEAN_ABS, f"CUDA {engine.precision} vs CPU fp32: mean abs {mean:.4f}"


def test_chunked_group_on_cuda_equals_one_batch(images: list[np.ndarray]) -> None:
    """GICD as in the paper chunks exactly (the consensus is the whole group's); the embedding share
    and the prototype gate take their means over the images segmented together, so they are off here,
    and the default's chunks are compared with the CPU's chunks. The exact comparison runs without TF32:
    cuDNN chooses its convolutions by batch size, and a TF32 one for one size and not the other would
    differ by TF32's rounding, not by the chunking."""
    paper = {"embedding_share": 0.0, "prototype_gate": 0.0}
    one = CoSalEngine.from_pretrained(device="cuda", precision="fp32", chunk_size=64, **paper)
    x = torch.stack([one.prepare(im) for im in images])
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        chunked = CoSalEngine.from_pretrained(device="cuda", precision="fp32", chunk_size=3, **paper).segment(x)
        np.testing.assert_allclose(chunked.maps, one.segment(x).maps, atol=1e-4)
    default_cuda = CoSalEngine.from_pretrained(device="cuda", precision="fp32", chunk_size=3).segment(x)
    default_cpu = CoSalEngine.from_pretrained(device="cpu", precision="fp32", chunk_size=3).segment(x)
    mean, worst = mean_max_diff(list(default_cuda.maps), list(default_cpu.maps))
    assert mean < FP32_MEAN_ABS and worst < FP32_MAX_ABS, f"chunked CUDA vs CPU: mean {mean:.2e}, max {worst:.2e}"


@pytest.mark.faiss_gpu
def test_faiss_gpu_store_round_trip(tmp_path: Path) -> None:
    """The store (CPU index, as designed) saves and reopens with the faiss-gpu build installed,
    and a GPU flat index over its consensus vectors ranks the groups as the store does."""
    import faiss

    assert faiss.get_num_gpus() > 0, "faiss has no GPU: install streamcosal with .[gpu] (faiss-gpu) on this machine"
    rng = np.random.default_rng(0)
    store = ConsensusStore.open(tmp_path / "consensus.npz")
    for i in range(50):
        store.put(f"group{i}", rng.normal(size=1000) * 3, n=8, t=float(i))
    store.save()
    reopened = ConsensusStore.open(tmp_path / "consensus.npz")
    assert reopened.groups() == store.groups()
    names = reopened.groups()
    vectors = np.stack([reopened.consensus(g) for g in names]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    resources = faiss.StandardGpuResources()  # must outlive the GPU index
    gpu_index = faiss.index_cpu_to_gpu(resources, 0, faiss.IndexFlatIP(1000))
    gpu_index.add(vectors)
    _, ids = gpu_index.search(vectors[:1], 6)
    expected = [names[i] for i in ids[0] if names[i] != names[0]][:5]
    assert [g for g, _ in reopened.nearest(names[0], k=5)] == expected


def test_video_end_to_end_on_cuda(data: Path, tmp_path: Path) -> None:
    """A DAVIS video through the pipeline on the GPU gives the CPU's masks (IoU per frame)."""
    video = tmp_path / "goat.mp4"
    encode_video(load_frames(data / "davis2016" / "images" / "goat", max_frames=16, size=(320, 192)), video, fps=10)
    config = PipelineConfig(mode="global", window=8, consensus_frames=8)
    rows = {}
    for device in ("cuda", "cpu"):
        engine = CoSalEngine.from_pretrained(device=device, precision="fp32")
        report = run_pipeline([video], tmp_path / device, engine, config)
        assert report.exit_code == 0 and report.frames == 16 and report.device.startswith(device)
        rows[device] = sorted(read_results(tmp_path / device).to_pylist(), key=lambda r: r["frame_index"])
    for gpu_row, cpu_row in zip(rows["cuda"], rows["cpu"]):
        a, b = decode_mask(gpu_row), decode_mask(cpu_row)
        union = np.logical_or(a, b).sum()
        assert union == 0 or np.logical_and(a, b).sum() / union > 0.95, gpu_row["frame_index"]


def test_an_archive_on_cuda_batches_its_videos_windows_with_the_maps_of_each_alone(data: Path, tmp_path: Path) -> None:
    """Three videos at once on the GPU (its default: their windows in one engine call) give the masks of the
    same run with each window its own call."""
    videos = []
    for name in ("goat", "blackswan", "car-roundabout"):
        videos.append(tmp_path / f"{name}.mp4")
        encode_video(load_frames(data / "davis2016" / "images" / name, max_frames=16, size=(320, 192)), videos[-1], fps=10)
    engine = CoSalEngine.from_pretrained(device="cuda", precision="fp32")
    rows = {}
    for batched in (True, False):
        config = PipelineConfig(mode="global", window=8, consensus_frames=8, parallel_groups=3, batch_groups=batched)
        assert run_pipeline(videos, tmp_path / str(batched), engine, config).frames == 48
        rows[batched] = {(r["source"], r["frame_index"]): decode_mask(r) for r in read_results(tmp_path / str(batched)).to_pylist()}
    for key, a in rows[True].items():
        b = rows[False][key]
        union = np.logical_or(a, b).sum()
        assert union == 0 or np.logical_and(a, b).sum() / union > 0.99, key


def test_nvdec_decodes_as_the_cpu_does(data: Path, tmp_path: Path) -> None:
    """NVDEC (PyAV's FFmpeg with CUDA) runs on this GPU and gives the CPU decoder's frames."""
    video = tmp_path / "goat.mp4"
    encode_video(load_frames(data / "davis2016" / "images" / "goat", max_frames=24, size=(320, 192)), video, fps=10)
    with open_source(video, reader="nvdec") as source:
        frames = list(source)
    assert source.decoder == "nvdec", source.decoder  # else it says why NVDEC did not run here
    with open_source(video, reader="pyav") as cpu_source:
        cpu = list(cpu_source)
    assert [f.index for f in frames] == [f.index for f in cpu] == list(range(24))
    for f, c in zip(frames, cpu):  # the same H.264 decoding; nv12 and yuv420p reach RGB by other rounding
        assert np.abs(f.image.astype(np.int16) - c.image).mean() < 1.0, f.index


def test_fp16_training_steps_with_loss_scaling(images: list[np.ndarray]) -> None:
    """fp16 training (precision auto on GPUs without bf16) scales the loss: the decoder learns, its weights stay finite."""
    from streamcosal.training.step import grad_scaler, train_step

    # the model as training builds it: an engine's network is frozen and folded for inference
    model, _ = load_checkpoint(default_weights_path())
    model = model.cuda().train()
    before = [p.detach().clone() for p in model.decoder.parameters()]
    optimizer = torch.optim.Adam(model.decoder.parameters(), lr=1e-4)
    scaler = grad_scaler("fp16", torch.device("cuda"))
    x = torch.stack([torch.from_numpy(np.asarray(Image.fromarray(i).resize((224, 224)))).permute(2, 0, 1) for i in images]) / 255
    y = (x.mean(1, keepdim=True) > 0.5).float()  # any mask: the point is that the steps update
    after = list(model.decoder.parameters())
    losses = []
    for _ in range(17):  # a step whose scaled gradients overflow is skipped and the scale halved: 2^16 to 1
        losses.append(train_step(model, optimizer, x, y, "fp16", scaler))
        if any(not torch.equal(a, b) for a, b in zip(after, before)):
            break
    assert all(np.isfinite(losses)) and scaler.is_enabled() and scaler.get_scale() > 0
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before)), f"no step updated the decoder: {losses}"
