"""Post-processing on the engine's device (streamcosal.inference.postprocess): the same maps, masks
and numbers as the host path, on real frames; run here with the CPU as the device (the GPU tests run
it on CUDA)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from prefect_fixtures import DEV_THRESHOLD
from test_pipeline import davis_video, dev_checkpoint, dev_engine  # noqa: F401  (fixtures)

from streamcosal.inference.guided import guided_upsample
from streamcosal.inference.postprocess import postprocess, upsample_maps
from streamcosal.inference.transforms import resize_map
from streamcosal.io.imagefile import read_image
from streamcosal.run.pipeline import run_pipeline
from streamcosal.run.records import PipelineConfig
from streamcosal.storage import read_results
from streamcosal.storage.masks import decode_mask, decode_prob_png, mask_stats

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def frames(data: Path) -> list[np.ndarray]:
    """Three 854x480 DAVIS frames and a 500x375 PASCAL photo: two sizes in one window."""
    davis = sorted((data / "davis2016" / "images" / "blackswan").glob("*.jpg"))[:3]
    photo = sorted((data / "pascal_coseg" / "images" / "Cat").glob("*.jpg"))[:1]
    return [read_image(path)[0] for path in davis + photo]


def smooth_maps(n: int, size: int) -> np.ndarray:
    """[n,S,S] maps in [0,1] with soft blobs and edges, as a decoder's are."""
    noise = np.random.default_rng(0).random((size, size, n)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 8).reshape(size, size, n).transpose(2, 0, 1) * 4 - 1.5, 0, 1)


@pytest.mark.parametrize("size", [224, 288])
def test_guided_and_bilinear_upsampling_equal_the_host_paths(frames: list[np.ndarray], size: int) -> None:
    maps = smooth_maps(len(frames), size)
    for upsampling, host in (("guided", guided_upsample), ("bilinear", lambda m, im: resize_map(m, im.shape[:2]))):
        for m, image in zip(maps, frames):
            ours = upsample_maps(torch.from_numpy(m[None]), torch.from_numpy(image[None]), upsampling)[0].numpy()
            assert ours.shape == image.shape[:2]
            assert np.abs(ours - host(m, image)).mean() < 1e-4, upsampling


def test_masks_areas_and_mean_probabilities_equal_the_hosts(frames: list[np.ndarray]) -> None:
    maps = smooth_maps(len(frames), 256)
    done = postprocess(maps, frames, "guided", threshold=0.5, device=CPU, keep_probs=True)
    assert len(done) == len(frames)
    for result, m, image in zip(done, maps, frames):
        prob = guided_upsample(m, image)
        mask, _, area, mean_prob = mask_stats(prob, 0.5)
        assert result.mask.shape == image.shape[:2] and result.mask.dtype == bool
        assert np.mean(result.mask != mask) < 1e-3  # pixels at the threshold may round either way
        assert result.area == pytest.approx(area, abs=1e-3) and result.mean_prob == pytest.approx(mean_prob, abs=1e-3)
        assert np.abs(result.prob - prob).mean() < 1 / 255
    empty = postprocess(np.zeros((1, 224, 224), np.float32), frames[:1], "bilinear", threshold=0.5, device=CPU)
    assert not empty[0].mask.any() and empty[0].area == 0.0 and empty[0].mean_prob == 0.0 and empty[0].prob is None


def test_a_pipeline_with_masks_made_on_the_engines_device_writes_the_hosts_rows(data, dev_engine, tmp_path):
    path, _ = davis_video(data, tmp_path, "blackswan")
    rows = {}
    for on_device in (False, True):
        config = PipelineConfig(window=4, consensus_frames=4, threshold=DEV_THRESHOLD, postprocess_on_device=on_device,
                                keep_prob_png=True)
        run_pipeline([path], tmp_path / str(on_device), dev_engine, config)
        rows[on_device] = sorted(read_results(tmp_path / str(on_device)).to_pylist(), key=lambda r: r["frame_index"])
    assert len(rows[True]) == len(rows[False]) == 8
    for host, device in zip(rows[False], rows[True]):
        a, b = decode_mask(host), decode_mask(device)
        # the dev model's maps sit within 0.01 of the threshold, so a few pixels of equal maps flip
        assert a.any() and (a & b).sum() / (a | b).sum() > 0.95
        prob_host, prob_device = decode_prob_png(host["prob_png"]), decode_prob_png(device["prob_png"])
        assert np.abs(prob_host - prob_device).mean() <= 1 / 255
        assert device["mean_prob"] == pytest.approx(host["mean_prob"], abs=2e-3)
        assert device["area_fraction"] == pytest.approx(host["area_fraction"], abs=1e-3)
        assert device["prob_png"] is not None and (device["bbox"] is None) == (host["bbox"] is None)
