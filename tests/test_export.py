"""Export (streamcosal.run.export) of real results: a DAVIS clip through the dev engine, exported as
COCO, CSV, JSON and PNG masks; each checked against the Parquet rows, and each bad input refused."""

from __future__ import annotations

import csv
import errno
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from prefect_fixtures import DEV_THRESHOLD
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from test_pipeline import davis_video, dev_checkpoint, dev_engine  # noqa: F401  (fixtures)

from streamcosal.run.export import ExportReport, export_results
from streamcosal.run.pipeline import run_pipeline
from streamcosal.run.records import PipelineConfig
from streamcosal.storage import RESULT_SCHEMA, decode_mask, read_events, read_results
from streamcosal.storage.parquet_files import source_key

RUN = "export-run"
FRAME_COLUMNS = RESULT_SCHEMA.names
EXPORTED = [c for c in FRAME_COLUMNS if c not in ("mask_rle", "prob_png")]


@pytest.fixture(scope="module")
def results(data: Path, dev_engine, tmp_path_factory) -> Path:  # noqa: F811
    """One 8-frame DAVIS clip through the dev engine, with masks that are neither empty nor full (1-3 % of
    the frame: a low event threshold makes them an event)."""
    folder = tmp_path_factory.mktemp("export")
    video, _ = davis_video(data, folder, "blackswan")
    out = folder / "out"
    config = PipelineConfig(threshold=DEV_THRESHOLD, window=4, run_id=RUN, event_threshold=0.001)
    report = run_pipeline([video], out, dev_engine, config)
    assert report.exit_code == 0 and report.frames == 8 and read_events(out).num_rows >= 1
    return out


@pytest.fixture(scope="module")
def history(results: Path, tmp_path_factory) -> Path:
    """The results beside an older run's rows for the same frames (as --keep-history keeps them)."""
    out = tmp_path_factory.mktemp("history") / "out"
    shutil.copytree(results, out)
    for path in list((out / "frames").glob("source_key=*/*.parquet")):
        table = pq.read_table(path)  # keeps the schema metadata
        older = table.set_column(0, table.schema.field(0), pa.array(["older-run"] * table.num_rows))
        pq.write_table(older, path.with_name("older-run.0.parquet"))
    return out


def by_frame(table: pa.Table) -> dict[tuple[str, int, str], dict]:
    return {(r["source"], r["frame_index"], r["run_id"]): r for r in table.to_pylist()}


def test_coco_round_trips_pixel_exact(results: Path, tmp_path: Path) -> None:
    table = read_results(results)
    report = export_results(results, tmp_path, "coco")
    assert report == ExportReport(files=[tmp_path / "coco.json"], frames=table.num_rows, events=0)
    data = json.loads((tmp_path / "coco.json").read_text())
    assert data["categories"] == [{"id": 1, "name": "common object"}]
    rows = by_frame(table)
    assert len(data["images"]) == table.num_rows == 8
    images = {image["id"]: image for image in data["images"]}
    assert len(images) == 8
    for image in data["images"]:
        row = rows[(image["source"], image["frame_index"], image["run_id"])]
        assert image["file_name"] == f"{row['source']}#{row['frame_index']}"
        assert [image["height"], image["width"]] == list(row["mask_rle"]["size"]) == [96, 160]
        assert image["timestamp"] == row["timestamp"] and image["group"] == row["group"] == "blackswan"
    non_empty = [r for r in rows.values() if decode_mask(r).any()]
    assert 0 < len(non_empty) and len(data["annotations"]) == len(non_empty)
    assert sorted(a["id"] for a in data["annotations"]) == list(range(1, len(non_empty) + 1))
    api = COCO()  # the official API indexes it and makes the same masks
    api.dataset = data
    api.createIndex()
    for ann in data["annotations"]:
        image = images[ann["image_id"]]
        row = rows[(image["source"], image["frame_index"], image["run_id"])]
        mask = decode_mask(row)
        assert isinstance(ann["segmentation"]["counts"], str)
        np.testing.assert_array_equal(coco_mask.decode(ann["segmentation"]).astype(bool), mask)
        np.testing.assert_array_equal(api.annToMask(ann).astype(bool), mask)
        assert ann["area"] == int(mask.sum()) and ann["bbox"] == list(row["bbox"])
        assert (ann["category_id"], ann["iscrowd"]) == (1, 0)
        assert np.float32(ann["score"]) == np.float32(row["mean_prob"])


def test_csv_holds_every_row_and_event_without_mask_bytes(results: Path, tmp_path: Path) -> None:
    table, events = read_results(results), read_events(results)
    report = export_results(results, tmp_path, "csv")
    assert report.files == [tmp_path / "frames.csv", tmp_path / "events.csv"]
    assert (report.frames, report.events) == (table.num_rows, events.num_rows)
    with open(tmp_path / "frames.csv", newline="") as f:
        reader = csv.DictReader(f)
        frames = list(reader)
    bbox = ["bbox_x", "bbox_y", "bbox_w", "bbox_h"]
    assert reader.fieldnames == [c for name in EXPORTED for c in (bbox if name == "bbox" else [name])]
    assert len(frames) == table.num_rows
    rows = by_frame(table)
    for frame in frames:
        row = rows[(frame["source"], int(frame["frame_index"]), frame["run_id"])]
        assert [frame[c] for c in bbox] == ([str(v) for v in row["bbox"]] if row["bbox"] else [""] * 4)
        assert np.float32(frame["area_fraction"]) == np.float32(row["area_fraction"])
        assert float(frame["timestamp"]) == row["timestamp"]
    text = (tmp_path / "frames.csv").read_text()
    assert not any(bytes(r["mask_rle"]["counts"]).decode() in text for r in rows.values())
    with open(tmp_path / "events.csv", newline="") as f:
        reader = csv.DictReader(f)
        exported = list(reader)
    assert reader.fieldnames == events.column_names and len(exported) == events.num_rows
    assert [int(e["start_frame"]) for e in exported] == sorted(events["start_frame"].to_pylist())


def test_json_holds_every_row_and_event_without_mask_bytes(results: Path, tmp_path: Path) -> None:
    table, events = read_results(results), read_events(results)
    report = export_results(results, tmp_path, "json", run_id=RUN)
    assert report == ExportReport([tmp_path / "frames.json", tmp_path / "events.json"], table.num_rows, events.num_rows)
    frames = json.loads((tmp_path / "frames.json").read_text())
    assert len(frames) == table.num_rows
    rows = by_frame(table)
    for frame in frames:
        assert list(frame) == EXPORTED
        row = rows[(frame["source"], frame["frame_index"], frame["run_id"])]
        for name in EXPORTED:
            if isinstance(row[name], float):  # float32 columns as their shortest decimal
                assert np.float32(frame[name]) == np.float32(row[name]), name
            else:
                assert frame[name] == row[name], name
    exported = json.loads((tmp_path / "events.json").read_text())
    assert len(exported) == events.num_rows and all(list(e) == events.column_names for e in exported)
    assert {e["start_frame"] for e in exported} == set(events["start_frame"].to_pylist())


def test_png_masks_equal_the_stored_masks(results: Path, tmp_path: Path) -> None:
    table = read_results(results)
    report = export_results(results, tmp_path, "png")
    assert (report.frames, report.events, len(report.files)) == (8, 0, 8)
    assert sorted(report.files) == sorted(tmp_path.rglob("*.png"))
    for row in table.to_pylist():
        path = tmp_path / source_key(row["source"]) / f"{row['frame_index']:06d}.png"
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert image.dtype == np.uint8 and image.shape == (96, 160)
        assert set(np.unique(image)) <= {0, 255}
        np.testing.assert_array_equal(image == 255, decode_mask(row))


def test_a_run_is_exported_alone(history: Path, tmp_path: Path) -> None:
    assert sorted(pc.unique(read_results(history)["run_id"]).to_pylist()) == ["export-run", "older-run"]
    assert export_results(history, tmp_path / "all", "json").frames == 16
    older = export_results(history, tmp_path / "older", "csv", run_id="older-run")
    assert older.frames == 8 and older.events == 0  # the older run's rows were copied, not its events
    with open(tmp_path / "older" / "frames.csv", newline="") as f:
        assert {r["run_id"] for r in csv.DictReader(f)} == {"older-run"}
    assert len(export_results(history, tmp_path / "png", "png", run_id=RUN).files) == 8


def test_two_runs_of_one_frame_are_refused_as_png(history: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"two rows for frame 0 of .*blackswan.mp4 \(runs export-run and older-run.*--run"):
        export_results(history, tmp_path, "png")
    assert not any(tmp_path.iterdir())


def test_a_run_without_rows_is_named_with_the_runs_present(history: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"run 'nope' has no rows in .*; its runs: export-run, older-run$"):
        export_results(history, tmp_path, "coco", run_id="nope")
    assert not any(tmp_path.iterdir())


def test_missing_empty_and_foreign_results_folders(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match=rf"no results folder at {re.escape(str(tmp_path / 'missing'))}: give the folder a run"):
        export_results(tmp_path / "missing", dest, "csv")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=rf"{re.escape(str(empty))} holds no streamcosal results \(no frames folder\)"):
        export_results(empty, dest, "coco")
    (empty / "frames").mkdir()
    with pytest.raises(ValueError, match=rf"{re.escape(str(empty))} holds no results \(its frames folder has no rows\)"):
        export_results(empty, dest, "json")
    foreign = tmp_path / "foreign" / "frames" / "source_key=x" / "theirs.parquet"
    foreign.parent.mkdir(parents=True)
    pq.write_table(pa.table({"a": [1, 2]}), foreign)
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path / 'foreign'))} is not a streamcosal results folder.*theirs.parquet"):
        export_results(tmp_path / "foreign", dest, "png")
    a_file = tmp_path / "file.txt"
    a_file.write_text("not results")
    with pytest.raises(ValueError, match=rf"{re.escape(str(a_file))} is a file, not a results folder"):
        export_results(a_file, dest, "csv")
    with pytest.raises(ValueError, match=r"unknown export format 'xml': choose one of coco, csv, json, png"):
        export_results(empty, dest, "xml")  # type: ignore[arg-type]
    assert not dest.exists()


@pytest.mark.parametrize("fmt", ["coco", "csv", "json", "png"])
def test_an_existing_export_is_never_overwritten(results: Path, tmp_path: Path, fmt: str) -> None:
    first = export_results(results, tmp_path, fmt)
    before = {p: p.read_bytes() for p in first.files}
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path))} already holds an export: {re.escape(str(first.files[0]))} exists"):
        export_results(results, tmp_path, fmt)
    assert {p: p.read_bytes() for p in first.files} == before
    # one file of the export is enough to refuse, and nothing else is written
    last = first.files[-1]
    for path in first.files[:-1]:
        path.unlink()
    with pytest.raises(ValueError, match=rf"{re.escape(str(last))} exists, and an export never overwrites"):
        export_results(results, tmp_path, fmt)
    assert all(not p.exists() for p in first.files[:-1])


def test_a_file_as_destination_is_refused(results: Path, tmp_path: Path) -> None:
    dest = tmp_path / "export.json"
    dest.write_text("{}")
    with pytest.raises(ValueError, match=rf"export destination {re.escape(str(dest))} is a file: give a folder"):
        export_results(results, dest, "coco")


def test_a_destination_inside_the_results_folder_or_blocked_by_a_file_is_refused_before_writing(
        results: Path, tmp_path: Path) -> None:
    """Inside the results folder an export would be read as results (the viewer listed its files as runs);
    a file where the PNG export needs a source's folder failed after other sources' masks were written."""
    before = sorted(results.rglob("*"))
    for dest in (results, results / "frames", results / "exports" / "csv"):
        with pytest.raises(ValueError, match=rf"export destination {re.escape(str(dest))} is inside the results "
                                             rf"folder {re.escape(str(results))}"):
            export_results(results, dest, "csv")
    assert sorted(results.rglob("*")) == before
    other = tmp_path / "other_results"  # another run's results folder: accepted, frames.csv written into it
    shutil.copytree(results, other)
    with pytest.raises(ValueError, match=rf"export destination {re.escape(str(other))} is a streamcosal results "
                                         r"folder \(it holds frames/ or runs/\)"):
        export_results(results, other, "csv")
    assert not (other / "frames.csv").exists()
    dest = tmp_path / "png"
    blocker = dest / source_key(read_results(results)["source"][0].as_py())
    blocker.parent.mkdir()
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match=rf"{re.escape(str(blocker))} is a file where the export writes a folder"):
        export_results(results, dest, "png")
    assert list(dest.iterdir()) == [blocker]


@pytest.mark.parametrize("fmt", ["csv", "png"])
def test_an_export_that_fails_midway_removes_what_it_wrote_and_can_run_again(results: Path, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch,
                                                                              fmt: str) -> None:
    """A disk that fills up at the export's second file: the files written and the folders made are
    removed, the message names the destination, the file and what to do; the next try writes it all."""
    from streamcosal.run import export

    write_new, written = export._write_new, []

    def filling_up(path: Path, data: bytes, dest: Path) -> None:
        if len(written) == 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write_new(path, data, dest)
        written.append(path)

    monkeypatch.setattr(export, "_write_new", filling_up)
    dest = tmp_path / "exports" / fmt
    with pytest.raises(ValueError, match=rf"export to {re.escape(str(dest))} failed at .* \(No space left on "
                                         r"device\); the 1 files it had written are removed: give a folder you can "
                                         r"write \(or free space there\), then export again"):
        export_results(results, dest, fmt)
    assert written and not any(p.exists() for p in written) and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(export, "_write_new", write_new)
    assert all(p.is_file() for p in export_results(results, dest, fmt).files)


def test_the_export_command_writes_and_refuses_to_overwrite(results: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from streamcosal.cli import app

    done = CliRunner().invoke(app, ["export", str(results), "--to", str(tmp_path / "x"), "--format", "csv"])
    assert done.exit_code == 0, done.output
    assert f"exported {read_results(results).num_rows} frames" in done.stdout and (tmp_path / "x" / "frames.csv").is_file()
    again = CliRunner().invoke(app, ["export", str(results), "--to", str(tmp_path / "x"), "--format", "csv"])
    assert again.exit_code == 2 and "already holds an export" in again.output
    unset = CliRunner().invoke(app, ["export", str(results), "--to", "", "--format", "csv"])  # --to "$UNSET"
    assert unset.exit_code == 2 and "--to is empty: give the folder to export into" in unset.output
