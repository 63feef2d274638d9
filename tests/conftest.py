"""Shared test setup: the real data beside the checkout, CPU threads, an isolated Prefect home."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Prefect reads its settings at import: isolate it before any test imports it.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="streamcosal-prefect-"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STREAMCOSAL_DATA", REPO.parent / "shared" / "data"))

# STREAMCOSAL_TEST_THREADS: fewer threads when something else (a training run) has a core.
torch.set_num_threads(int(os.environ.get("STREAMCOSAL_TEST_THREADS", min(2, os.cpu_count() or 1))))


@pytest.fixture(scope="session")
def data() -> Path:
    """The real images and masks (../shared/data). Missing data fails the test: it never skips."""
    if not (DATA / "pascal_coseg").is_dir():
        pytest.fail(f"real test data not found at {DATA}: put the shared data beside the checkout "
                    "(../shared/data) or set STREAMCOSAL_DATA")
    return DATA


def group_images(data: Path, dataset: str, group: str, n: int) -> list[Path]:
    """The first n images of a group of a shared dataset (sorted by name)."""
    return sorted((data / dataset / "images" / group).glob("*.jpg"))[:n]


def untrained_checkpoint(folder: Path, input_size: int, name: str = "dev.pt", version: str = "dev") -> Path:
    """A checkpoint of GICD-Lite0 with a seeded, untrained decoder: for CLI tests that need a model
    file but no trained maps."""
    from streamcosal.model import GICD, build_backbone, save_checkpoint

    torch.manual_seed(0)
    path = folder / name
    save_checkpoint(GICD(build_backbone("efficientnet_lite0")), path, input_size=input_size, version=version)
    return path


def short_of_gpu_memory(model: torch.nn.Module, above: int) -> None:
    """``model``'s backbone pass raises CUDA's out-of-memory error on more than ``above`` images
    (simulated: the CPU has no GPU memory to run out of)."""
    features = model.backbone.features

    def small_gpu(batch: torch.Tensor) -> list[torch.Tensor]:
        if batch.shape[0] > above:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return features(batch)

    model.backbone.features = small_gpu
