"""`auto` precision by measurement (as on a GPU), run on the CPU with the device a parameter: the fastest
candidate is kept, a candidate that runs out of memory is left out, and measuring touches no run state."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import short_of_gpu_memory
from test_pipeline import davis_video, dev_checkpoint  # noqa: F401  (a fixture)

from streamcosal.inference.engine import CoSalEngine
from streamcosal.inference.precision import fastest, measured_candidates, resolve_precision
from streamcosal.model import consensus_from_logits
from streamcosal.run.pipeline import run_pipeline
from streamcosal.run.records import PipelineConfig
from streamcosal.storage.schema import MODEL_KEY

CPU = torch.device("cpu")


def test_the_fastest_is_kept_and_one_out_of_memory_is_left_out():
    delays = {"fp16": 0.03, "bf16": 0.01, "fp32": 0.02}
    calls: list[str] = []

    def run(precision: str) -> None:
        calls.append(precision)
        time.sleep(delays[precision])

    choice, seconds = fastest(run, ("fp16", "bf16", "fp32"), CPU, repeats=2)
    assert choice == "bf16" and list(seconds) == ["fp16", "bf16", "fp32"]
    assert seconds["bf16"] < seconds["fp32"] < seconds["fp16"] and seconds["fp16"] >= 0.03
    assert calls.count("fp32") == 3  # one warm-up call, then the two timed

    def short_of_memory(precision: str) -> None:
        if precision == "bf16":
            raise torch.OutOfMemoryError("CUDA out of memory")
        run(precision)

    choice, seconds = fastest(short_of_memory, ("fp16", "bf16", "fp32"), CPU, repeats=1)
    assert choice == "fp32" and set(seconds) == {"fp16", "fp32"}
    with pytest.raises(torch.OutOfMemoryError):
        fastest(short_of_memory, ("bf16",), CPU)


def test_measuring_changes_no_map(dev_checkpoint):  # noqa: F811
    """The engine measures on the first group it segments, with that group's own consensus: a running
    consensus (a function of the window's logits) is still called once, and the maps are those of an
    engine set to the chosen precision from the start."""
    engine = CoSalEngine.from_checkpoint(dev_checkpoint, precision="auto", measure_precision=True)
    assert "precision auto (the fastest of" in engine.describe()
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    calls: list[int] = []

    def running_consensus(logits: torch.Tensor) -> torch.Tensor:
        calls.append(len(logits))
        return consensus_from_logits(logits)

    measured = engine.segment(x, consensus=running_consensus)
    assert calls == [4]
    assert engine.precision in measured_candidates(CPU) and set(engine.precision_seconds) == set(measured_candidates(CPU))
    assert "auto: the fastest measured here" in engine.describe()
    fixed = CoSalEngine.from_checkpoint(dev_checkpoint, precision=engine.precision)
    np.testing.assert_allclose(measured.maps, fixed.segment(x, consensus=running_consensus).maps, atol=1e-6)


def test_measured_at_the_largest_input_size_the_engine_runs(dev_checkpoint, caplog):  # noqa: F811
    """Before a run, `auto` is measured at the size where a run's time goes (the engine's largest: 854x480
    video's), or at the size a batch of groups runs at; the log names the shape."""
    engine = CoSalEngine.from_checkpoint(dev_checkpoint, precision="auto", measure_precision=True,
                                         input_size=64, max_input_size=96)
    with caplog.at_level(logging.INFO, logger="streamcosal.inference.precision"):
        engine.settle_precision(3)
    assert "at groups of 3x3x96x96" in caplog.text and engine.precision_seconds is not None
    caplog.clear()
    other = CoSalEngine.from_checkpoint(dev_checkpoint, precision="auto", measure_precision=True,
                                        input_size=64, max_input_size=96)
    with caplog.at_level(logging.INFO, logger="streamcosal.inference.precision"):
        other.settle_precision(2, 64)
    assert "at groups of 2x3x64x64" in caplog.text


def test_a_run_records_the_measured_precision(dev_checkpoint, data, tmp_path):  # noqa: F811
    """`run_pipeline` measures before it writes which precision made the maps."""
    video, _ = davis_video(data, tmp_path, "blackswan", n=4)
    engine = CoSalEngine.from_checkpoint(dev_checkpoint, precision="auto", measure_precision=True)
    report = run_pipeline([video], tmp_path / "out", engine, PipelineConfig(window=4))
    model = json.loads(pq.read_schema(next((tmp_path / "out").glob("frames/*/*.parquet"))).metadata[MODEL_KEY])
    assert engine.precision_seconds is not None
    assert report.precision == model["precision"] == engine.precision and report.sources[0].frames == 4


@pytest.mark.parametrize("when", ["before a run", "at the first group"])
def test_out_of_memory_while_measuring_halves_the_chunks_and_measures_again(dev_checkpoint, recwarn, when):  # noqa: F811
    """A GPU too small for a chunk of 8 at every candidate precision (simulated above 2 images): the
    measurement is not the end of the run but is made again in chunks half as large, said each time, as
    a group that runs out of memory is; the group then gets its maps."""
    engine = CoSalEngine.from_checkpoint(dev_checkpoint, precision="auto", measure_precision=True, chunk_size=8)
    short_of_gpu_memory(engine.model, above=2)
    x = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    if when == "before a run":
        engine.settle_precision(8, 64)
        assert engine.precision_seconds is not None
    maps = engine.segment(x).maps
    assert engine.chunk_size == 2 and engine.precision_seconds is not None and maps.shape == (6, 64, 64)
    said = [str(w.message) for w in recwarn if "GPU memory" in str(w.message)]
    assert [m.split(":")[0] for m in said] == ["out of GPU memory at chunks of 8 images",
                                               "out of GPU memory at chunks of 4 images"], said


@pytest.mark.parametrize(("capability", "auto", "candidates"), [((7, 5), "fp16", ("fp16", "fp32")),
                                                                ((9, 0), "bf16", ("fp16", "bf16", "fp32"))])
def test_bf16_on_a_gpu_only_where_it_is_native(monkeypatch, capability, auto, candidates):
    """A T4 or V100 (compute capability 7.x) emulates bf16, slowly, though torch's is_bf16_supported() says
    True there: `auto` runs fp16 and measures no bf16; from Ampere on (8.x, an H100's 9.0) bf16 is native.
    The GPU asked about is the engine's (simulated here: no GPU on the CPU machine)."""
    asked = []

    def capability_of(device):
        asked.append(device)
        return capability

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", capability_of)
    gpu = torch.device("cuda:1")
    assert resolve_precision("auto", gpu) == auto and measured_candidates(gpu) == candidates
    assert asked == [gpu, gpu]
