"""The Prefect flows under one ``prefect_test_harness`` (a temporary local API for the whole session).

Real engine (an untrained dev checkpoint standing in for the default weights), real 8-frame DAVIS
clips, real PASCAL images for the evaluation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pyarrow.compute as pc
import pytest
from prefect_fixtures import clip, dev_checkpoint, tiny_dataset

from streamcosal.params import EngineSpec, RunParams
from streamcosal.run import archive
from streamcosal.storage import read_results
from streamcosal.storage.parquet_files import write_by_source

# The flows under a Prefect test harness (a local API): run by `pytest -m slow` (.ci/run runs both).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory, data: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("flow-assets")
    broken = folder / "broken.mp4"
    broken.write_bytes(b"")
    return {"weights": dev_checkpoint(folder), "a": clip(folder, "blackswan"), "b": clip(folder, "goat"),
            "broken": broken, "folder": folder}


def artifact(state: Any, key: str) -> str:
    """The Markdown artifact ``key`` of the flow run that ended in ``state``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    assert len(found) == 1, f"expected one {key!r} artifact, found {len(found)}"
    return found[0].data


def unit(assets: dict[str, Path], **params: Any) -> dict[str, Any]:
    """The flows' engine and run parameters for the short clips: the dev checkpoint on the CPU."""
    return dict(engine=EngineSpec(weights=assets["weights"], device="cpu"),
                params=RunParams(window=4, consensus_frames=8, **params))


# -- cosal-video ---------------------------------------------------------------------------------


def test_video_flow_writes_parquet_rows_and_an_overlay(harness: None, assets: dict[str, Path], tmp_path: Path) -> None:
    from streamcosal.flows.video import cosal_video

    out = tmp_path / "out"
    state = cosal_video(str(assets["a"]), str(out), run_id="flowtest", return_state=True, **unit(assets, overlay=True))
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["frames"] == 8 and summary["run_id"] == "flowtest"
    rows = read_results(out)
    assert rows.num_rows == 8 and set(rows["run_id"].to_pylist()) == {"flowtest"}
    assert sorted(rows["frame_index"].to_pylist()) == list(range(8))
    assert set(rows["model_version"].to_pylist()) == {"dev"}
    overlay = Path(summary["sources"][str(assets["a"])]["overlay"])
    assert overlay.is_file() and overlay.parent == out / "overlays" / "flowtest"
    assert "| done |" in artifact(state, "cosal-video")


def test_video_flow_fails_with_the_source_error(harness: None, assets: dict[str, Path], tmp_path: Path) -> None:
    from streamcosal.flows.video import cosal_video

    state = cosal_video(str(assets["broken"]), str(tmp_path / "out"), return_state=True, **unit(assets))
    assert state.is_failed()
    assert "broken.mp4" in state.message and "empty" in state.message
    assert state.message.count(str(assets["broken"])) == 1  # the error names it once
    assert "| failed |" in artifact(state, "cosal-video")



def test_flows_refuse_bad_paths_before_any_work(harness: None, assets: dict[str, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A blank out (an unset variable), a relative path (named from the serving folder), an empty list and two
    datasets of one folder name: each run fails with what to do, having written nothing."""
    from streamcosal.flows.archive import cosal_archive
    from streamcosal.flows.evaluate import cosal_eval
    from streamcosal.flows.video import cosal_video

    monkeypatch.chdir(tmp_path)
    state = cosal_video(str(assets["a"]), "", return_state=True, **unit(assets))
    assert state.is_failed() and "out is empty" in state.message and not any(tmp_path.iterdir())
    state = cosal_video("clips/nothere.mp4", "out", return_state=True, **unit(assets))
    assert state.is_failed() and str(tmp_path / "clips" / "nothere.mp4") in state.message
    state = cosal_archive([], str(tmp_path / "archive"), return_state=True, **unit(assets))
    assert state.is_failed() and "videos is an empty list" in state.message
    state = cosal_eval(["/data/CoCA/test", "/data/CoSal2015/test"], str(tmp_path / "nightly"), return_state=True)
    assert state.is_failed() and "share the folder name 'test'" in state.message
    assert not (tmp_path / "archive").exists() and not (tmp_path / "nightly").exists()


# -- cosal-archive -----------------------------------------------------------------------------------


def test_archive_flow_finishes_the_others_records_the_failure_and_resumes(
        harness: None, assets: dict[str, Path], tmp_path: Path) -> None:
    from streamcosal.flows.archive import cosal_archive

    out = tmp_path / "out"
    videos = [str(assets["a"]), str(assets["broken"]), str(assets["b"])]
    state = cosal_archive(videos, str(out), return_state=True, **unit(assets))
    assert state.is_failed()
    assert "1 of 3 video(s) failed" in state.message and "broken.mp4" in state.message
    markdown = artifact(state, "cosal-archive")
    assert "**1 failed**, 2 processed" in markdown
    assert f"| `{assets['broken']}` | failed |" in markdown and "empty" in markdown
    records = {Path(r.video).name: r for r in archive.Manifest(out).records()}
    assert {n: r.status for n, r in records.items()} == {"blackswan.mp4": "done", "broken.mp4": "failed",
                                                        "goat.mp4": "done"}
    assert records["broken.mp4"].attempts == 1  # a damaged video is not retried
    first = read_results(out)
    assert first.num_rows == 16
    from streamcosal.storage import ConsensusStore  # the videos' consensus, merged for `streamcosal search`
    assert sorted(ConsensusStore.open(out / "archive" / "consensus.npz").groups()) == sorted(videos[::2])

    # a run killed in the middle of goat.mp4 left flushed rows of an uncommitted attempt
    goat = records["goat.mp4"]
    archive.Manifest(out).path(goat.key).unlink()
    archive.discard_run(out, goat.run_id)
    leftover = first.filter(pc.equal(first["run_id"], goat.run_id)).slice(0, 3)
    write_by_source(out / "frames", leftover, f"{goat.run_id}.000000.parquet")
    assert read_results(out).num_rows == 8 + 3

    state = cosal_archive(videos[::2], str(out), return_state=True, **unit(assets))
    assert state.is_completed(), state.message
    assert state.result() == {"processed": 1, "skipped": 1, "partial": 0, "failed": 0, "duplicates": 0}
    assert f"`{goat.run_id}`" in artifact(state, "cosal-archive")  # named among the deleted attempts
    key = ("source", "frame_index")
    again = read_results(out)
    assert sorted(again.to_pylist(), key=lambda r: tuple(r[k] for k in key)) == \
        sorted(first.to_pylist(), key=lambda r: tuple(r[k] for k in key))


def test_the_flow_resumes_what_run_archive_did(harness: None, assets: dict[str, Path], tmp_path: Path) -> None:
    """Both key units on the checkpoint's identity (run_archive keyed on the engine's name and version:
    the flow then committed the same video again and readers saw duplicate rows)."""
    from streamcosal.flows.archive import cosal_archive

    out, settings = tmp_path / "out", unit(assets)
    archive.run_archive([str(assets["a"])], out, settings["engine"], settings["params"])
    state = cosal_archive([str(assets["a"])], str(out), return_state=True, **settings)
    assert state.is_completed(), state.message
    assert state.result()["skipped"] == 1 and state.result()["processed"] == 0
    assert read_results(out).num_rows == 8 and len(archive.Manifest(out).records()) == 1


def test_archive_flow_retries_a_transient_failure(harness: None, assets: dict[str, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import streamcosal.flows.archive as archive_flow

    calls: list[str] = []
    run_unit = archive.run_unit

    def flaky(unit, *args, **kwargs):
        calls.append(unit.video)
        if len(calls) == 1:
            raise OSError("No space left on device (simulated)")
        return run_unit(unit, *args, **kwargs)

    monkeypatch.setattr(archive, "run_unit", flaky)
    monkeypatch.setattr(archive_flow, "process_unit", archive_flow.process_unit.with_options(retry_delay_seconds=0))
    out = tmp_path / "out"
    state = archive_flow.cosal_archive([str(assets["a"])], str(out), return_state=True, **unit(assets))
    assert state.is_completed(), state.message
    assert len(calls) == 2 and read_results(out).num_rows == 8


# -- cosal-eval ------------------------------------------------------------------------------------------


def test_eval_flow_appends_history_and_fails_below_a_floor(harness: None, assets: dict[str, Path], data: Path,
                                                           tmp_path: Path) -> None:
    from streamcosal.evaluation import nightly
    from streamcosal.flows.evaluate import cosal_eval

    dataset = tiny_dataset(data, tmp_path)
    out = tmp_path / "nightly"
    common = dict(engine=EngineSpec(weights=assets["weights"], device="cpu"), return_state=True)
    state = cosal_eval([str(dataset)], str(out), floors={"MAE": 0.99}, run_id="night-1", **common)
    assert state.is_completed(), state.message
    history = nightly.read_history(out / "history")
    assert history["run_id"].to_pylist() == ["night-1"] and history["n_images"].to_pylist() == [4]
    markdown = artifact(state, "cosal-eval")
    assert "All floors met" in markdown and "pr_curve.png" in markdown

    state = cosal_eval([str(dataset)], str(out), floors={"maxF": 0.999}, run_id="night-2", **common)
    assert state.is_failed() and "floor" in state.message and "maxF" in state.message
    assert nightly.read_history(out / "history")["run_id"].to_pylist() == ["night-1", "night-2"]
    assert "FAILED: 1 floor(s) not met" in artifact(state, "cosal-eval")

    # a dataset that cannot be evaluated: the others' rows and the artifact land, then the flow fails
    state = cosal_eval([str(tmp_path / "not-there"), str(dataset)], str(out), run_id="night-3", **common)
    assert state.is_failed() and "1 dataset(s) failed" in state.message and "not-there" in state.message
    history = nightly.read_history(out / "history")
    assert history["run_id"].to_pylist() == ["night-1", "night-2", "night-3"]
    assert "FAILED: 1 dataset(s) could not be evaluated" in artifact(state, "cosal-eval")


# -- cosal-train ---------------------------------------------------------------------------------------------


def test_train_flow_trains_a_tiny_config(harness: None, data: Path, tmp_path: Path) -> None:
    from streamcosal.flows.train import cosal_train

    tiny_dataset(data, tmp_path / "data", groups=("Cat", "Dog", "Sofa"), n=3)
    config = tmp_path / "tiny.toml"
    config.write_text(f"""
name = "tiny"
[model]
input_size = 64
[data]
root = "{tmp_path / 'data'}"
train_sets = ["tiny"]
manifest = "manifest.parquet"
[validation]
groups = ["tiny/Sofa"]
videos = []
[train]
out_dir = "run"
epochs = 2
steps_per_epoch = 1
max_images = 3
threads = 1
""")
    state = cosal_train(str(config), stop_after=1, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["epochs_done"] == 1 and Path(result["best_checkpoint"]).is_file()
    assert "Best epoch 1" in artifact(state, "cosal-train")


# -- deployments ---------------------------------------------------------------------------------------------


def test_deployments_are_declared_once_with_schedules_in_the_configured_time_zone() -> None:
    from streamcosal.flows.deployments import deployments
    from streamcosal.flows.settings import OrchestrationSettings

    settings = OrchestrationSettings.from_env({
        "STREAMCOSAL_TIMEZONE": "Europe/Berlin", "STREAMCOSAL_ARCHIVE_CRON": "30 2 * * *",
        "STREAMCOSAL_ARCHIVE_VIDEOS": os.pathsep.join(["/videos/a", "/videos/b"]), "STREAMCOSAL_ARCHIVE_OUT": "/results",
        "STREAMCOSAL_EVAL_FLOORS": "maxF=0.6,MAE=0.12"})
    found = {f"{d.flow_name}/{d.name}": d for d in deployments(settings)}
    assert sorted(found) == ["cosal-archive/nightly", "cosal-eval/nightly", "cosal-train/default", "cosal-video/default"]
    archive_schedule = found["cosal-archive/nightly"].schedules[0]
    assert archive_schedule.schedule.cron == "30 2 * * *" and archive_schedule.schedule.timezone == "Europe/Berlin"
    assert archive_schedule.active  # videos and output configured
    assert found["cosal-archive/nightly"].parameters["videos"] == ["/videos/a", "/videos/b"]
    eval_schedule = found["cosal-eval/nightly"].schedules[0]
    assert eval_schedule.schedule.cron == "0 5 * * *" and not eval_schedule.active  # no datasets: paused
    assert found["cosal-eval/nightly"].parameters["floors"] == {"maxF": 0.6, "MAE": 0.12}
    assert not found["cosal-video/default"].schedules
    assert found["cosal-video/default"].entrypoint == "streamcosal.flows.video.cosal_video"
    with pytest.raises(ValueError, match="IANA"):
        OrchestrationSettings.from_env({"STREAMCOSAL_TIMEZONE": "Mars/Olympus"})


# -- Ray (the `dist` extra) ------------------------------------------------------------------------------------


def test_archive_flow_runs_its_units_on_a_local_ray_instance(harness: None, assets: dict[str, Path],
                                                             tmp_path: Path) -> None:
    """Starts a local Ray (~10 s here). CI installs the dist extra and runs it (a missing extra fails
    there); elsewhere it is skipped, with the reason, where prefect-ray is not installed."""
    if not os.environ.get("CI"):
        pytest.importorskip("prefect_ray", reason="the Ray task runner needs the dist extra: pip install '.[dist]'")
    from streamcosal.flows.archive import cosal_archive
    from streamcosal.flows.runners import task_runner
    from streamcosal.flows.settings import OrchestrationSettings

    on_ray = cosal_archive.with_options(task_runner=task_runner(OrchestrationSettings(task_runner="ray")))
    out = tmp_path / "out"
    videos = [str(assets["a"]), str(assets["broken"]), str(assets["b"])]
    state = on_ray(videos, str(out), return_state=True, **unit(assets))
    assert state.is_failed() and "broken.mp4" in state.message  # the failure came back from a Ray worker
    assert read_results(out).num_rows == 16
    assert {r.status for r in archive.Manifest(out).records()} == {"done", "failed"}


def test_serve_refuses_bad_settings_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from streamcosal.cli import app

    monkeypatch.setenv("STREAMCOSAL_TIMEZONE", "Mars/Olympus")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2 and "IANA time zone" in result.output


def test_tasks_retry_only_what_may_pass_the_next_time() -> None:
    """Out of memory (the host's, the GPU's) and I/O errors are retried; a missing input, images that cannot be
    segmented and a broken GPU context (only a new process gets a working one) are not."""
    import torch

    from streamcosal.evaluation.report import EvalBatchError
    from streamcosal.flows.runners import transient

    class Failed:
        def __init__(self, error: BaseException) -> None:
            self.error = error

        def result(self) -> None:
            raise self.error

    errors = [MemoryError(), torch.OutOfMemoryError("CUDA out of memory"), OSError(28, "No space left on device"),
              FileNotFoundError("gone.mp4"), EvalBatchError([], {"gicd": "1 images could not be segmented"}),
              ValueError("bad parameter"), RuntimeError("CUDA error: an illegal memory access was encountered")]
    assert [transient(None, None, Failed(e)) for e in errors] == [True, True, True, False, False, False, False]
