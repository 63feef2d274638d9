"""Export a results folder's current results (what ``storage.read_results`` returns) to other formats.

``dest`` is a folder (created when missing), outside the results folder; an export never overwrites a
file, and one that fails (a full disk) removes what it wrote, so that it can be run again. The formats:

- ``coco``: ``dest/coco.json``, one COCO results file. ``images``: one per frame (``id``,
  ``file_name`` = ``"<source>#<frame_index>"``, ``width`` and ``height`` of the mask, and
  ``frame_index``, ``timestamp``, ``source``, ``group``, ``run_id``). ``annotations``: one per
  non-empty mask (``id``, ``image_id``, ``category_id`` 1, ``segmentation`` = the stored COCO RLE
  with its counts as a string, ``area`` in pixels, ``bbox`` [x, y, w, h], ``iscrowd`` 0, ``score`` =
  the mean probability inside the mask). ``categories``: ``[{"id": 1, "name": "common object"}]``.
  ``pycocotools.mask.decode`` of a segmentation gives the stored mask, pixel for pixel.
- ``csv``: ``dest/frames.csv`` (one row per frame: every column but the mask's RLE and the
  probability PNG; the box as ``bbox_x``, ``bbox_y``, ``bbox_w``, ``bbox_h``, empty for an empty
  mask) and ``dest/events.csv`` (one row per event, every column of ``EVENT_SCHEMA``).
- ``json``: ``dest/frames.json`` and ``dest/events.json``: lists of row objects (one per line) with
  the same columns as the CSV files, the box as a list ``[x, y, w, h]`` or null.
- ``png``: ``dest/<source_key>/<frame_index:06d>.png``: one 8-bit mask per frame, 255 inside the
  object and 0 elsewhere, at the mask's size (``source_key`` as in the results' partitions).

Rows are in the order (source, frame_index, run_id). Float32 columns are written as their shortest
decimal (0.486, not 0.48600000143051147); a value that is not finite is written as null (empty in CSV).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, get_args

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pycocotools import mask as coco_mask

from streamcosal.storage import decode_mask, read_events, read_results
from streamcosal.storage.layout import FRAMES_DIR, REPORTS_DIR
from streamcosal.storage.parquet_files import source_key

ExportFormat = Literal["coco", "csv", "json", "png"]
FORMATS: tuple[str, ...] = get_args(ExportFormat)
MASK_COLUMNS = ("mask_rle", "prob_png")  # never exported as columns
BBOX_COLUMNS = ("bbox_x", "bbox_y", "bbox_w", "bbox_h")  # the CSV's box
CATEGORY = {"id": 1, "name": "common object"}
COCO_FILE = "coco.json"
EXISTS = "{dest} already holds an export: {path} exists, and an export never overwrites; remove it or export elsewhere"


@dataclass
class ExportReport:
    """What an export wrote: its files (in the order written), frames and events exported
    (events: 0 for ``coco`` and ``png``, which hold none)."""

    files: list[Path] = field(default_factory=list)
    frames: int = 0
    events: int = 0


def export_results(out: Path, dest: Path, fmt: ExportFormat, run_id: str | None = None) -> ExportReport:
    """Export the current results of the results folder ``out`` into the folder ``dest``.

    Args:
        out: a results folder (``--out`` of a run).
        dest: the folder to write into; created when missing. Nothing in it is overwritten.
        fmt: ``"coco"``, ``"csv"``, ``"json"`` or ``"png"`` (see the module docstring).
        run_id: export only this run's rows (and events); default every current row.

    Raises:
        ValueError: ``out`` is missing, empty or not a streamcosal results folder; ``run_id`` has no
            rows there; ``dest`` is a file or already holds a file this export would write; ``png``
            of a folder holding two runs' rows for one frame (``--keep-history``) without ``run_id``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    out, dest = Path(out), Path(dest)
    table = _frames(out, run_id)
    rows = table.to_pylist()
    planned: list[tuple[Path, Callable[[], bytes]]]  # each file and what makes its bytes
    events = 0  # exported: none for coco and png
    if fmt == "coco":
        planned = [(dest / COCO_FILE, lambda: json.dumps(_coco(rows)).encode())]
    elif fmt == "png":
        _check_one_row_per_frame(rows, out)
        planned = [(dest / source_key(r["source"]) / f"{r['frame_index']:06d}.png", partial(_png, r)) for r in rows]
    else:
        event_table = _events(out, run_id)
        events = event_table.num_rows
        write = _csv_bytes if fmt == "csv" else _json_bytes
        planned = [(dest / f"frames.{fmt}", lambda: write(_plain_rows(table, split_bbox=fmt == "csv"))),
                   (dest / f"events.{fmt}", lambda: write(_plain_rows(event_table, split_bbox=False)))]
    _check_dest(dest, [path for path, _ in planned], out)
    report = ExportReport(frames=len(rows), events=events)
    parents = {path.parent for path, _ in planned}
    made = [folder for folder in {f for parent in parents for f in (parent, *parent.parents)} if not folder.exists()]
    try:
        for path, writer in planned:
            _write_new(path, writer(), dest)
            report.files.append(path)
    except OSError as error:
        _remove(report.files, made)
        where = error.filename or path
        raise ValueError(f"export to {dest} failed at {where} ({error.strerror or error}); the {len(report.files)} "
                         "files it had written are removed: give a folder you can write (or free space there), then "
                         "export again") from None
    except BaseException:  # Ctrl-C: no half export left to block the next one
        _remove(report.files, made)
        raise
    return report


def _frames(out: Path, run_id: str | None) -> pa.Table:
    """The rows to export, sorted; a ValueError naming ``out`` (or the run) when there are none."""
    if not out.exists():
        raise ValueError(f"no results folder at {out}: give the folder a run wrote its results to (its --out)")
    if not out.is_dir():
        raise ValueError(f"{out} is a file, not a results folder: give the folder a run wrote its results to")
    try:
        table = read_results(out)
    except FileNotFoundError:
        raise ValueError(f"{out} holds no streamcosal results (no frames folder): give the folder a run wrote its "
                         "results to (its --out), or run `streamcosal video ... --out` into it first") from None
    except ValueError as e:
        raise ValueError(f"{out} is not a streamcosal results folder, or holds a file that is not ours: {e}") from e
    if table.num_rows == 0:
        raise ValueError(f"{out} holds no results (its frames folder has no rows): run `streamcosal video ... --out "
                         f"{out}` first, or give the folder a run wrote to")
    if run_id is not None:
        runs = sorted(pc.unique(table["run_id"]).to_pylist())
        table = table.filter(pc.equal(table["run_id"], run_id))
        if table.num_rows == 0:
            raise ValueError(f"run {run_id!r} has no rows in {out} (a later run may have replaced them); "
                             f"its runs: {', '.join(runs)}")
    return table.sort_by([("source", "ascending"), ("frame_index", "ascending"), ("run_id", "ascending")])


def _events(out: Path, run_id: str | None) -> pa.Table:
    """The events to export (``run_id``'s only when given), sorted like the frames."""
    try:
        table = read_events(out)
    except ValueError as e:
        raise ValueError(f"{out} holds events that are not ours: {e}") from e
    if run_id is not None:
        table = table.filter(pc.equal(table["run_id"], run_id))
    return table.sort_by([("source", "ascending"), ("start_frame", "ascending"), ("run_id", "ascending")])


def _check_one_row_per_frame(rows: list[dict[str, Any]], out: Path) -> None:
    """PNG files are named by source and frame: refuse two rows of one frame (runs kept side by side)."""
    seen: dict[tuple[str, int], str] = {}
    for row in rows:
        key = (row["source"], row["frame_index"])
        if key in seen:
            raise ValueError(f"{out} holds two rows for frame {key[1]} of {key[0]} (runs {seen[key]} and "
                             f"{row['run_id']}, kept with --keep-history): export one run's masks (run_id, --run RUN)")
        seen[key] = row["run_id"]


def _check_dest(dest: Path, paths: Iterable[Path], out: Path) -> None:
    """Refuse, before writing anything, a ``dest`` inside the results folder ``out`` (a later run or the
    viewer would read the export as results) or that is a file, a file where the export needs a folder,
    and a file of ``paths`` that exists already."""
    results, target = out.resolve(), dest.resolve()
    if target == results or results in target.parents:
        raise ValueError(f"export destination {dest} is inside the results folder {out}: runs and the viewer read "
                         "every file there; give a folder outside it")
    if dest.exists() and not dest.is_dir():
        raise ValueError(f"export destination {dest} is a file: give a folder to export into")
    if (dest / FRAMES_DIR).is_dir() or (dest / REPORTS_DIR).is_dir():
        raise ValueError(f"export destination {dest} is a streamcosal results folder (it holds {FRAMES_DIR}/ or "
                         f"{REPORTS_DIR}/): runs and the viewer read every file there; give a folder outside it")
    for path in paths:
        if path.exists() or path.is_symlink():
            raise ValueError(EXISTS.format(dest=dest, path=path))
        if path.parent != dest and path.parent.exists() and not path.parent.is_dir():
            raise ValueError(f"{path.parent} is a file where the export writes a folder of masks: remove it or "
                             "export elsewhere")


def _remove(files: list[Path], folders: list[Path]) -> None:
    """Undo a failed export: the ``files`` it wrote, then the ``folders`` it made, where nothing else is in them."""
    for path in files:
        path.unlink(missing_ok=True)
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:  # not made after all, or holding something else
            pass


def _write_new(path: Path, data: bytes, dest: Path) -> None:
    """Write ``data`` to a new file ``path`` (never over an existing one); a failed write leaves no file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        f = open(path, "xb")  # noqa: SIM115  (not `with`: a file that existed is not ours to remove)
    except FileExistsError:  # appeared since the check
        raise ValueError(EXISTS.format(dest=dest, path=path)) from None
    try:
        with f:
            f.write(data)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _coco(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The COCO results dict of ``rows``: images, annotations of the non-empty masks, one category."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, row in enumerate(rows, start=1):
        height, width = (int(s) for s in row["mask_rle"]["size"])
        images.append({"id": image_id, "file_name": f"{row['source']}#{row['frame_index']}", "width": width,
                       "height": height, "frame_index": row["frame_index"], "timestamp": _finite(row["timestamp"]),
                       "source": row["source"], "group": row["group"], "run_id": row["run_id"]})
        rle = {"size": [height, width], "counts": bytes(row["mask_rle"]["counts"]).decode("ascii")}
        area = int(coco_mask.area(rle))
        if area == 0:
            continue
        annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": CATEGORY["id"],
                            "segmentation": rle, "area": area, "bbox": [int(v) for v in coco_mask.toBbox(rle)],
                            "iscrowd": 0, "score": _float32(row["mean_prob"])})
    return {"info": {"description": "streamcosal co-saliency results"}, "images": images,
            "annotations": annotations, "categories": [dict(CATEGORY)]}


def _png(row: dict[str, Any]) -> bytes:
    """``row``'s mask as an 8-bit PNG, 255 inside the mask."""
    ok, png = cv2.imencode(".png", decode_mask(row).astype(np.uint8) * 255)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode the mask of frame {row['frame_index']} of {row['source']}")
    return png.tobytes()


def _plain_rows(table: pa.Table, split_bbox: bool) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows) of ``table`` without the mask columns; float32 values as their shortest decimal;
    the box split into ``BBOX_COLUMNS`` when ``split_bbox``."""
    table = table.drop_columns([c for c in MASK_COLUMNS if c in table.column_names])
    float32 = {f.name for f in table.schema if pa.types.is_float32(f.type)}
    columns: list[str] = []
    for name in table.column_names:
        columns += list(BBOX_COLUMNS) if name == "bbox" and split_bbox else [name]
    rows = []
    for row in table.to_pylist():
        plain: dict[str, Any] = {}
        for name, value in row.items():
            if name == "bbox" and split_bbox:
                plain.update(zip(BBOX_COLUMNS, value or [None] * len(BBOX_COLUMNS)))
            elif isinstance(value, float):
                plain[name] = _float32(value) if name in float32 else _finite(value)
            else:
                plain[name] = value
        rows.append(plain)
    return columns, rows


def _csv_bytes(plain: tuple[list[str], list[dict[str, Any]]]) -> bytes:
    """A CSV file with a header: None values as empty fields."""
    columns, rows = plain
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


def _json_bytes(plain: tuple[list[str], list[dict[str, Any]]]) -> bytes:
    """A JSON list of the row objects, one per line."""
    _, rows = plain
    lines = ",\n".join(json.dumps(row, ensure_ascii=False, allow_nan=False) for row in rows)
    return (f"[\n{lines}\n]\n" if rows else "[]\n").encode("utf-8")


def _finite(value: float | None) -> float | None:
    """``value``, or None when it is not finite (JSON has no NaN)."""
    return value if value is not None and math.isfinite(value) else None


def _float32(value: float | None) -> float | None:
    """A float32 value as the shortest decimal that reads back as the same float32; None when not finite."""
    return None if value is None or not math.isfinite(value) else float(str(np.float32(value)))
