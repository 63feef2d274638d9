"""The resumable archive library and the nightly history, without Prefect.

Units run with the real engine (an untrained dev checkpoint) on real 8-frame DAVIS clips; the kill
test SIGKILLs a real process in the middle of a unit.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from prefect_fixtures import CLIP_FRAMES, DEV_THRESHOLD, Processes, clip, dev_checkpoint, wait_for

from streamcosal.evaluation import nightly
from streamcosal.evaluation.results import METRICS
from streamcosal.inference.engine import engine_for
from streamcosal.params import EngineSpec, RunParams
from streamcosal.run import archive, jobs
from streamcosal.storage import ConsensusStore, FrameResult, ResultWriter, read_events, read_results
from streamcosal.storage.layout import new_run_id

REPO = Path(__file__).resolve().parents[1]
PARAMS = RunParams(window=4, consensus_frames=8, flush_every=2, threshold=DEV_THRESHOLD)


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory, data: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("archive-assets")
    return {"weights": dev_checkpoint(folder), "a": clip(folder, "blackswan"), "b": clip(folder, "goat")}


@pytest.fixture(scope="module")
def engine(assets: dict[str, Path]):
    return engine_for(spec(assets))


def spec(assets: dict[str, Path]) -> EngineSpec:
    return EngineSpec(weights=assets["weights"], precision="fp32", device="cpu")


def fake_rows(out: Path, run_id: str, source: str, n: int = 3) -> None:
    with ResultWriter(out, run_id, flush_every=1) as writer:
        for i in range(n):
            writer.write(FrameResult(source=source, group="g", window=0, frame_index=i, timestamp=i / 8,
                                     mask=np.zeros((4, 6), bool), mean_prob=0.0, similarity=0.0,
                                     model_name="m", model_version="v"))


def sorted_rows(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: (r["source"], r["frame_index"]))


# -- planning ----------------------------------------------------------------------------------


def test_units_are_keyed_by_content_model_and_parameters(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.mp4").write_bytes(b"video a")
    (tmp_path / "v" / "copy_of_a.mp4").write_bytes(b"video a")
    (tmp_path / "v" / "sub").mkdir()
    (tmp_path / "v" / "sub" / "b.mov").write_bytes(b"video b")
    (tmp_path / "v" / "notes.txt").write_text("not a video")
    (tmp_path / "v" / "._a.mp4").write_bytes(b"macOS's AppleDouble of a copied a.mp4")
    (tmp_path / "v" / ".Trashes").mkdir()
    (tmp_path / "v" / ".Trashes" / "deleted.mp4").write_bytes(b"video c")
    videos = archive.list_videos(tmp_path / "v")
    assert [Path(v).name for v in videos] == ["a.mp4", "copy_of_a.mp4", "b.mov"]
    assert archive.list_videos(str(tmp_path / "v" / "*.mp4")) == videos[:2]
    with pytest.raises(FileNotFoundError, match="no file matches"):
        archive.list_videos(str(tmp_path / "none*.mp4"))

    units, duplicates = archive.plan_units(videos + [str(tmp_path / "missing.mp4")], "m1", {"window": 8})
    assert [Path(u.video).name for u in units] == ["a.mp4", "b.mov", "missing.mp4"]
    assert duplicates == {videos[1]: videos[0]}  # same bytes: not run twice
    assert units[2].error and "No such file" in units[2].error
    same, _ = archive.plan_units(videos[:1], "m1", {"window": 8})
    assert same[0].key == units[0].key and same[0].run_id == f"arc-{units[0].key}"
    assert archive.plan_units(videos[:1], "m2", {"window": 8})[0][0].key != units[0].key
    assert archive.plan_units(videos[:1], "m1", {"window": 4})[0][0].key != units[0].key


# -- files of uncommitted attempts ---------------------------------------------------------------


def test_discard_uncommitted_deletes_only_unfinished_archive_attempts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    fake_rows(out, "arc-0000000000000001", "done.mp4")
    fake_rows(out, "arc-0000000000000002", "killed.mp4")
    fake_rows(out, "20260101T000000Z-cli", "cli.mp4")  # a `streamcosal video` run: never touched
    hidden = out / "frames" / next((out / "frames").iterdir()).name / ".arc-0000000000000002.000009.parquet.x.tmp"
    hidden.write_bytes(b"half")
    (out / "overlays" / "arc-0000000000000002").mkdir(parents=True)
    (out / "overlays" / "arc-0000000000000002" / "x.mp4").write_bytes(b"half")
    manifest = archive.Manifest(out)
    manifest.write(archive.UnitRecord("0000000000000001", "done.mp4", "h", "m", {}, "done", "arc-0000000000000001",
                                      frames=3))
    assert archive.archive_run_ids(out) == {"arc-0000000000000001", "arc-0000000000000002"}

    committed = archive.read_committed(out)  # readers ignore the killed attempt meanwhile
    assert sorted(set(committed["source"].to_pylist())) == ["cli.mp4", "done.mp4"]
    assert read_results(out).num_rows == 9

    deleted = archive.discard_uncommitted(out)
    assert list(deleted) == ["arc-0000000000000002"]
    assert hidden in deleted["arc-0000000000000002"] and not hidden.exists()
    assert not (out / "overlays" / "arc-0000000000000002").exists()
    table = read_results(out)
    assert sorted(set(table["source"].to_pylist())) == ["cli.mp4", "done.mp4"] and table.num_rows == 6


def test_archive_lock_refuses_a_live_holder_and_is_free_once_its_holder_dies(tmp_path: Path) -> None:
    with archive.archive_lock(tmp_path):
        with pytest.raises(archive.ArchiveBusy, match=f"pid {os.getpid()} on "):
            with archive.archive_lock(tmp_path):
                pass
    killed = subprocess.run(  # holds the lock, then dies without letting it go
        [sys.executable, "-c", "import os, sys\nfrom streamcosal.run import archive\n"
         "with archive.archive_lock(sys.argv[1]):\n    os.kill(os.getpid(), 9)", str(tmp_path)])
    assert killed.returncode == -signal.SIGKILL
    with archive.archive_lock(tmp_path):  # the OS released it
        assert json.loads((tmp_path / "archive" / "lock.json").read_text())["pid"] == os.getpid()


# -- units with the real engine -------------------------------------------------------------------


def test_failures_are_recorded_and_the_others_finish(tmp_path: Path, assets: dict[str, Path], engine) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    out = tmp_path / "out"
    with pytest.raises(archive.ArchiveFailed) as failed:
        archive.run_archive([str(broken), str(assets["a"])], out, spec(assets), PARAMS)
    summary = failed.value.summary
    assert [r.status for r in summary.records] == ["failed", "done"]
    assert archive.Manifest(out).get(summary.records[1].key).precision == "fp32"  # what the done unit ran at
    record = archive.Manifest(out).get(summary.records[0].key)
    assert record.status == "failed" and record.attempts == 1 and str(broken) in str(failed.value)
    assert record.error and "broken.mp4" in record.error
    assert archive.run_files(out, record.run_id) == []  # nothing left of the failed unit
    assert read_results(out).num_rows == 8
    assert "| `" + str(broken) + "` | failed |" in summary.markdown()
    assert pickle.loads(pickle.dumps(failed.value)).summary.failed[0].error == record.error  # Ray pickles errors

    # a rerun skips the done video and tries the failed one again
    with pytest.raises(archive.ArchiveFailed) as again:
        archive.run_archive([str(broken), str(assets["a"])], out, spec(assets), PARAMS)
    assert again.value.summary.counts() == {"processed": 0, "skipped": 1, "partial": 0, "failed": 1, "duplicates": 0}
    assert archive.Manifest(out).get(record.key).attempts == 2
    assert read_results(out).num_rows == 8


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   OSError(errno.ENOSPC, "No space left on device")], ids=["cuda-oom", "disk-full"])
def test_out_of_memory_or_a_full_disk_inside_a_group_is_transient(tmp_path: Path, assets: dict[str, Path], engine,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  error: Exception) -> None:
    """The pipeline catches these per group; the unit must still fail as transient (retried), not as a bad video."""
    def segment(*args, **kwargs):
        raise error

    monkeypatch.setattr(engine, "segment", segment)
    out = tmp_path / "out"
    unit = archive.plan_units([str(assets["a"])], "m", {})[0][0]
    with pytest.raises(archive.UnitFailed) as failed:
        archive.run_unit(unit, out, engine, jobs.pipeline_config(PARAMS))
    assert failed.value.transient and archive.is_transient(failed.value)
    assert str(error) in failed.value.error
    assert archive.Manifest(out).get(unit.key).status == "failed" and archive.run_files(out, unit.run_id) == []


def test_a_full_disk_at_the_units_last_write_fails_it_as_transient(tmp_path: Path, assets: dict[str, Path], engine,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline records a failed final write in its report instead of raising: the unit must not be
    committed without its last rows."""
    def close(self):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.directory))

    monkeypatch.setattr(ResultWriter, "close", close)
    out = tmp_path / "out"
    unit = archive.plan_units([str(assets["a"])], "m", {})[0][0]
    with pytest.raises(archive.UnitFailed) as failed:
        archive.run_unit(unit, out, engine, jobs.pipeline_config(PARAMS))
    assert failed.value.transient and "No space left on device" in failed.value.error
    assert archive.Manifest(out).get(unit.key).status == "failed" and archive.run_files(out, unit.run_id) == []
    monkeypatch.undo()
    assert archive.run_unit(unit, out, engine, jobs.pipeline_config(PARAMS)).status == "done"  # retried: done


def test_units_serve_no_live_metrics(tmp_path: Path, assets: dict[str, Path], engine) -> None:
    """The live settings are run parameters an archive flow can be given too: a metrics port (taken
    here, as by a unit running beside) must not fail a unit of video files, which has no live source,
    and `live` does not make its files live (every frame, in global mode, no latency)."""
    import socket

    unit = archive.plan_units([str(assets["a"])], "m", {})[0][0]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        params = PARAMS.model_copy(update={"metrics_port": taken.getsockname()[1], "live": True})
        assert archive.run_unit(unit, tmp_path / "out", engine, jobs.pipeline_config(params)).status == "done"
    rows = read_results(tmp_path / "out").to_pylist()
    assert len(rows) == CLIP_FRAMES and all(r["latency_s"] is None for r in rows)


def unit_threads(engine, monkeypatch: pytest.MonkeyPatch, then=None) -> list[str]:
    """The names of the threads the engine's windows are segmented in, filled as a run runs; `then()` after
    each call."""
    names: list[str] = []
    segment = engine.segment

    def recorded(*args, **kwargs):
        names.append(threading.current_thread().name)
        result = segment(*args, **kwargs)
        if then is not None:
            then()
        return result

    monkeypatch.setattr(engine, "segment", recorded)
    return names


def test_units_at_once_give_the_rows_of_one_after_another(tmp_path: Path, assets: dict[str, Path], engine,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`parallel_groups` units in threads sharing the engine (a GPU's default; asked for here on the CPU):
    the rows, run ids and stores of one unit after another; a broken video fails alone."""
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    videos = [str(assets["a"]), str(broken), str(assets["b"])]
    with pytest.raises(archive.ArchiveFailed):
        archive.run_archive(videos, tmp_path / "one", spec(assets), PARAMS)
    names = unit_threads(engine, monkeypatch)
    with pytest.raises(archive.ArchiveFailed) as failed:
        archive.run_archive(videos, tmp_path / "two", spec(assets), PARAMS.model_copy(update={"parallel_groups": 2}))
    assert [r.status for r in failed.value.summary.records] == ["done", "failed", "done"], [r.error for r in failed.value.summary.records]
    assert set(names) == {"streamcosal-unit blackswan.mp4", "streamcosal-unit goat.mp4"}
    assert sorted_rows(read_results(tmp_path / "two")) == sorted_rows(read_results(tmp_path / "one"))  # run ids too
    assert read_results(tmp_path / "two").num_rows == 2 * CLIP_FRAMES
    stores = [ConsensusStore.open(tmp_path / out / "archive" / "consensus.npz") for out in ("one", "two")]
    for video in videos[::2]:
        assert np.allclose(stores[0].consensus(video), stores[1].consensus(video))


def test_ctrl_c_stops_the_units_under_way_and_a_rerun_does_them(tmp_path: Path, assets: dict[str, Path], engine,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C reaches the main thread, which waits for the units' threads: each unit stops at its next frame,
    its files deleted and nothing committed; the signal is raised again; a rerun does both units."""
    videos = [str(assets["a"]), str(assets["b"])]
    params = PARAMS.model_copy(update={"parallel_groups": 2})
    reference = tmp_path / "reference"
    archive.run_archive(videos, reference, spec(assets), params)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    first = threading.Lock()

    def ctrl_c_at_the_first_window() -> None:
        if first.acquire(blocking=False):  # once, whichever unit's window ends first
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            time.sleep(0.5)  # the window still in the engine when the stop comes

    out = tmp_path / "out"
    unit_threads(engine, monkeypatch, ctrl_c_at_the_first_window)
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            archive.run_archive(videos, out, spec(assets), params)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    monkeypatch.undo()
    assert archive.Manifest(out).records() == [] and read_results(out).num_rows == 0
    assert not list(out.glob("frames/source_key=*/*.parquet"))  # the units' flushed rows deleted
    summary = archive.run_archive(videos, out, spec(assets), params)
    assert summary.counts()["processed"] == 2
    assert sorted_rows(read_results(out)) == sorted_rows(read_results(reference))


KILLED_RUN = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from streamcosal.run import archive
    from streamcosal.inference.engine import engine_for
    from streamcosal.params import EngineSpec, RunParams
    from streamcosal.storage import read_results

    weights, out, marker, *videos = sys.argv[1:]
    spec = EngineSpec(weights=weights, precision="fp32", device="cpu")
    engine = engine_for(spec)  # the engine run_archive builds from spec: one per spec and process
    segment, calls = engine.segment, []

    def segment_then_hang(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # unit 2 (2 windows per unit), once its first window's rows are flushed (hidden until
            # the unit commits them): the sink thread writes them beside this call, so wait for them
            while not list(Path(out).glob("frames/source_key=*/.arc-*.parquet")):
                time.sleep(0.05)
            open(marker, "w").close()
            time.sleep(600)  # the test SIGKILLs us here
        return segment(*args, **kwargs)

    engine.segment = segment_then_hang
    archive.run_archive(videos, out, spec, RunParams(**{params}))
""")


def test_a_killed_run_resumed_gives_the_rows_of_an_uninterrupted_run(tmp_path: Path, assets: dict[str, Path],
                                                                     engine) -> None:
    videos = [str(assets["a"]), str(assets["b"])]
    out, marker = tmp_path / "killed", tmp_path / "hanging"
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN.replace("{params}", repr(PARAMS.model_dump())))
    processes = Processes(tmp_path)
    try:
        run = processes.start("killed-run", [sys.executable, str(script), str(assets["weights"]), str(out),
                                             str(marker), *videos], dict(os.environ))
        reference = tmp_path / "uninterrupted"  # meanwhile, the same archive without a kill
        archive.run_archive(videos, reference, spec(assets), PARAMS)
        wait_for("unit 2 under way", marker.exists, 120, 0.2, alive=run, log=lambda: processes.log(run))
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(10)
    finally:
        processes.stop_all()
    manifest = archive.Manifest(out)
    records = [r for r in manifest.records()]
    assert [Path(r.video).name for r in records] == ["blackswan.mp4"]  # unit 1 committed, unit 2 not
    killed = archive.archive_run_ids(out) - manifest.committed_run_ids()
    assert len(killed) == 1  # unit 2's attempt left flushed rows behind, hidden: never read
    assert list(out.glob("frames/source_key=*/.arc-*.parquet"))
    assert read_results(out).num_rows == archive.read_committed(out).num_rows == 8

    summary = archive.run_archive(videos, out, spec(assets), PARAMS)
    assert summary.counts()["processed"] == 1 and summary.counts()["skipped"] == 1
    assert summary.discarded == sorted(killed)
    assert sorted_rows(read_results(out)) == sorted_rows(read_results(reference))  # run ids included
    assert sum(r["area_fraction"] > 0 for r in read_results(out).to_pylist()) > 0  # masks are compared, not all empty
    assert read_events(out).sort_by("source").to_pylist() == read_events(reference).sort_by("source").to_pylist()
    assert not list(out.rglob(".*.tmp")) and not list(out.rglob("*.tmp.mp4"))
    assert read_results(out).num_rows == 16

    # the merged consensus store: one group per video, the same after the kill as without it
    stores = {name: ConsensusStore.open(folder / "archive" / "consensus.npz") for name, folder in
              (("resumed", out), ("reference", reference))}
    assert sorted(stores["resumed"].groups()) == sorted(videos)
    for video in videos:
        assert np.allclose(stores["resumed"].consensus(video), stores["reference"].consensus(video))
        assert stores["resumed"].state(video).n == 8  # consensus_frames sampled over the 8-frame clip
    assert stores["resumed"].nearest(stores["reference"].consensus(videos[1]), k=1)[0][0] == videos[1]


def test_the_archive_store_is_rebuilt_from_committed_units_only_the_latest_unit_per_video(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stale = ConsensusStore(out / "archive" / "consensus.npz")
    stale.put("gone.mp4", np.ones(stale.dim), 4, 0.0)  # a video of an earlier run, no longer committed
    stale.save()
    manifest = archive.Manifest(out)
    for key, finished, value in (("b", "2026-11-28T10:00:00", 2.0), ("a", "2026-11-28T11:00:00", 3.0)):
        unit = ConsensusStore(out / "archive" / "stores" / f"{key}.npz")
        unit.put("clip", np.full(unit.dim, value), 4, 0.0)
        unit.save()
        manifest.write(archive.UnitRecord(key, "clip.mp4", "h", f"model {key}", {}, "done", f"arc-{key}",
                                          finished=finished))
    store = ConsensusStore.open(archive.rebuild_archive_store(out))
    assert store.groups() == ["clip.mp4"]  # "gone.mp4" is not kept
    assert np.allclose(store.state("clip.mp4").sums, 3.0)  # unit "a" finished last (its key sorts first)


# -- nightly history ---------------------------------------------------------------------------------


def night(run_id: str, at: datetime, maxf: float, mae: float) -> pa.Table:
    row = {"run_id": run_id, "run_at": at, "model": "m", "method": "gicd", "dataset": "tiny", "n_images": 4,
           "n_missing": 0, **{m: 0.5 for m in METRICS}, "maxF": maxf, "MAE": mae}
    return pa.Table.from_pylist([row], schema=nightly.HISTORY_SCHEMA)


def test_history_appends_and_finds_drops_and_missed_floors(tmp_path: Path) -> None:
    t0 = datetime(2026, 1, 1, 2, tzinfo=timezone.utc)
    nightly.append_history(tmp_path, night("n1", t0, 0.70, 0.10))
    nightly.append_history(tmp_path, night("n2", t0 + timedelta(days=1), 0.72, 0.09))
    nightly.append_history(tmp_path, night("n3", t0 + timedelta(days=2), 0.60, 0.15))
    with pytest.raises(FileExistsError):
        nightly.append_history(tmp_path, night("n3", t0, 0.1, 0.1))
    history = nightly.read_history(tmp_path)
    assert history["run_id"].to_pylist() == ["n1", "n2", "n3"]
    assert nightly.find_drops(history, "n2") == []
    drops = nightly.find_drops(history, "n3", tolerance=0.01)
    assert {(d.metric, d.previous, d.current, d.previous_run) for d in drops} == {
        ("maxF", 0.72, 0.60, "n2"), ("MAE", 0.09, 0.15, "n2")}
    last = history.filter(pc.equal(history["run_id"], "n3"))
    violations = nightly.check_floors(last, {"maxF": 0.65, "MAE": 0.2, "S": 0.5})
    assert [(v.metric, v.value) for v in violations] == [("maxF", 0.60)]
    assert "below the floor" in str(violations[0])
    with pytest.raises(ValueError, match="unknown metric"):
        nightly.check_floors(last, {"maxf": 0.5})


def test_nightly_run_ids_started_in_the_same_second_differ() -> None:
    at = datetime(2026, 1, 1, 2, tzinfo=timezone.utc)
    first, second = new_run_id("nightly-", at), new_run_id("nightly-", at)
    assert first != second and first.startswith("nightly-20260101T020000Z-")


def test_a_failed_dataset_does_not_stop_the_others_rows(tmp_path: Path, assets: dict[str, Path], data: Path) -> None:
    from prefect_fixtures import tiny_dataset

    dataset, missing = tiny_dataset(data, tmp_path), tmp_path / "not-there"
    report = nightly.run_nightly([missing, dataset], tmp_path / "out", engine=spec(assets),
                                 run_id="night-1")
    assert [str(f.dataset) for f in report.failures] == [str(missing)] and "not-there" in report.failures[0].error
    history = nightly.read_history(tmp_path / "out" / "history")
    assert history["dataset"].to_pylist() == ["tiny"] and history["n_images"].to_pylist() == [4]
    assert report.plots and "FAILED: 1 dataset(s) could not be evaluated" in report.markdown()
    with pytest.raises(nightly.NightFailed, match="1 dataset\\(s\\) failed:\n  .*not-there"):
        nightly.raise_for_night(report)


def test_an_evaluation_of_some_groups_segments_only_those(tmp_path: Path, assets: dict[str, Path], data: Path,
                                                          engine) -> None:
    from prefect_fixtures import tiny_dataset

    from streamcosal.evaluation.report import predict_and_evaluate

    dataset = tiny_dataset(data, tmp_path)
    (dataset / "images" / "Dog" / "broken.jpg").write_bytes(b"not a jpeg")  # in the group left out
    result = predict_and_evaluate(engine, dataset, tmp_path / "out", name="gicd", groups=["Cat"])
    assert list(result.groups) == ["Cat"] and result.counts.evaluated == 2
    assert [p.name for p in (tmp_path / "out" / "gicd" / "maps").iterdir()] == ["Cat"]
    with pytest.raises(ValueError, match="no group\\(s\\) \\['Horse'\\]"):  # before any work
        predict_and_evaluate(engine, dataset, tmp_path / "out2", name="gicd", groups=["Horse"])
    assert not (tmp_path / "out2").exists()



def test_an_evaluation_again_into_the_same_folder_scores_none_of_the_earlier_maps(tmp_path: Path, data: Path,
                                                                                  engine) -> None:
    """An image that fails this time is counted without prediction, not scored with the map an earlier run left."""
    from prefect_fixtures import tiny_dataset

    from streamcosal.evaluation.report import EvalBatchError, predict_and_evaluate

    dataset = tiny_dataset(data, tmp_path)
    first = predict_and_evaluate(engine, dataset, tmp_path / "out", name="gicd", groups=["Cat"])
    assert (first.counts.evaluated, first.counts.missing) == (2, 0)
    broken = sorted((dataset / "images" / "Cat").iterdir())[0]
    broken.unlink()
    broken.write_bytes(b"")
    with pytest.raises(EvalBatchError, match="1 of 1 evaluation") as caught:
        predict_and_evaluate(engine, dataset, tmp_path / "out", name="gicd", groups=["Cat"])
    (again,) = caught.value.results
    assert (again.counts.evaluated, again.counts.missing) == (1, 1)
