"""Events: the time intervals in which the common object is present in a source/group.

``detect_events`` turns a series of per-frame area fractions into intervals; ``events_from_results``
applies it to every (run, source, group) of a results table; ``write_events``/``read_events``
store them in ``root/events`` with the same atomic, source-partitioned files as the frame results.
"""

import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .parquet_files import read_files, write_by_source
from .schema import EVENT_SCHEMA

EVENTS_DIR = "events"


@dataclass(frozen=True)
class Event:
    """One interval in which the object is present. Times in seconds, frames as indexed."""

    start_frame: int
    end_frame: int
    start_time: float
    end_time: float
    duration: float  # end_time - start_time
    peak_area_fraction: float
    mean_area_fraction: float  # over all n_frames, bridged gap frames included
    n_frames: int  # frames from start to end inclusive, bridged gap frames included


def detect_events(
    timestamps: np.ndarray,
    frame_indices: np.ndarray,
    area_fractions: np.ndarray,
    threshold: float = 0.02,
    min_duration: float = 0.5,
    max_gap: float = 0.5,
) -> list[Event]:
    """Intervals where the object is present, debounced.

    The rule, in order:
      0. Frames without a finite timestamp (image groups: NaN) are left out: no time, no events.
      1. A frame is *present* when ``area_fraction >= threshold``. Each processed frame stands for
         the time until the next processed frame (a variable-frame-rate video shows a frame until
         the next one; with ``--fps 1`` a frame stands for its second, with ``--stride 6`` for six
         frames' time), the last one for the ``interval``: the median time between consecutive
         frames (0.1 s for every frame of a 10 fps video, 1 s with ``--fps 1``), so the two rules
         below hold the same whatever the sampling and the frame rate.
      2. Consecutive present frames form a run, however far apart they are. Two runs are merged
         when the absence between them (the time the absent frames stand for:
         ``t(first present of the second) - t(the frame after the last present of the first)``)
         is ``<= max(max_gap, interval)`` (short absences are bridged, and one missed processed
         frame always is; the absent frames become part of the event).
      3. Events covering less than ``min_duration`` (``end_time - start_time`` plus the time the
         last frame stands for) are dropped (short blips).

    Args:
        timestamps: [N] float seconds.
        frame_indices: [N] int.
        area_fractions: [N] float in [0, 1].
        The three arrays are sorted together by timestamp here; they need not come sorted.

    Returns:
        The events in time order.
    """
    t = np.asarray(timestamps, dtype=np.float64)
    frames = np.asarray(frame_indices, dtype=np.int64)
    area = np.asarray(area_fractions, dtype=np.float64)
    if not (t.ndim == frames.ndim == area.ndim == 1 and len(t) == len(frames) == len(area)):
        raise ValueError(
            "detect_events needs three 1-D arrays of one length; got shapes "
            f"timestamps {t.shape}, frame_indices {frames.shape}, area_fractions {area.shape}"
        )
    if min_duration < 0 or max_gap < 0:
        raise ValueError(f"min_duration and max_gap must be >= 0, got {min_duration}, {max_gap}")
    timed = np.flatnonzero(np.isfinite(t))
    order = timed[np.argsort(t[timed], kind="stable")]
    t, frames, area = t[order], frames[order], area[order]

    present = np.flatnonzero(area >= threshold)
    if present.size == 0:
        return []
    interval = float(np.median(np.diff(t))) if len(t) > 1 else 0.0
    stands_for = np.append(np.diff(t), interval)  # each frame: the time until the next one
    # A new run starts wherever the absent frames between two present ones stand for more than
    # max(max_gap, interval); consecutive present frames (no absent frame between) never part.
    absence = t[present[1:]] - t[present[:-1] + 1]
    breaks = np.flatnonzero(absence > max(max_gap, interval) + 1e-9) + 1
    events = []
    for run in np.split(present, breaks):
        first, last = int(run[0]), int(run[-1])
        if t[last] - t[first] + stands_for[last] < min_duration - 1e-9:
            continue
        span = area[first : last + 1]
        events.append(
            Event(
                start_frame=int(frames[first]),
                end_frame=int(frames[last]),
                start_time=float(t[first]),
                end_time=float(t[last]),
                duration=float(t[last] - t[first]),
                peak_area_fraction=float(span.max()),
                mean_area_fraction=float(span.mean()),
                n_frames=last - first + 1,
            )
        )
    return events


def events_table(run_id: str, source: str, group: str, events: list[Event]) -> pa.Table:
    """``events`` of one (run, source, group) as an ``EVENT_SCHEMA`` table."""
    rows = [{"run_id": run_id, "source": source, "group": group, **asdict(e)} for e in events]
    return pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)


def events_from_results(
    results: pa.Table,
    threshold: float = 0.02,
    min_duration: float = 0.5,
    max_gap: float = 0.5,
) -> pa.Table:
    """``detect_events`` on every (run_id, source, group) of a ``RESULT_SCHEMA`` table."""
    columns = ["run_id", "source", "group", "timestamp", "frame_index", "area_fraction"]
    missing = [c for c in columns if c not in results.column_names]
    if missing:
        raise ValueError(
            f"events_from_results needs results columns {missing}; pass a read_results() table"
        )
    table = results.select(columns).sort_by([(c, "ascending") for c in columns[:4]])
    keys = list(zip(*(table[c].to_pylist() for c in columns[:3])))
    t = table["timestamp"].to_numpy()
    frames = table["frame_index"].to_numpy()
    area = table["area_fraction"].to_numpy()
    parts = [EVENT_SCHEMA.empty_table()]
    start = 0
    for end in range(1, len(keys) + 1):
        if end == len(keys) or keys[end] != keys[start]:
            events = detect_events(
                t[start:end], frames[start:end], area[start:end], threshold, min_duration, max_gap
            )
            parts.append(events_table(*keys[start], events))
            start = end
    return pa.concat_tables(parts)


def write_events(root: Path, events: pa.Table) -> list[Path]:
    """Append ``events`` (``EVENT_SCHEMA``) to ``root/events``: one new file per run and source,
    named ``<run_id>.events-<hex>.parquet`` (``storage.layout.RunLayout`` finds a run's files by name)."""
    events = events.cast(EVENT_SCHEMA)
    name = f"events-{uuid.uuid4().hex[:16]}.parquet"
    return [path for run_id in pc.unique(events["run_id"]).to_pylist()
            for path in write_by_source(Path(root) / EVENTS_DIR, events.filter(pc.equal(events["run_id"], run_id)),
                                        f"{run_id}.{name}")]


def read_events(root: Path) -> pa.Table:
    """All events under ``root``, as an ``EVENT_SCHEMA`` table; empty when no run there had one.

    Raises:
        FileNotFoundError: ``root`` does not exist.
    """
    root = Path(root)
    if root.is_dir() and not (root / EVENTS_DIR).exists():
        return EVENT_SCHEMA.empty_table()
    return read_files(root / EVENTS_DIR, EVENT_SCHEMA)
