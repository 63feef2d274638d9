"""The result sink: a segmented window's maps -> result rows, overlays, counters and event series.

    sink = ResultSink(writer, config, report, engine, overlays=out / "overlays" / run_id)
    sink.write(group, window, prediction, owner)    # every emitted frame of the window
    with SinkThread(sink) as write:                 # or: the same in a thread, beside the engine
        write(group, window, prediction, owner)
    sink.close_member(member)                       # the source's overlay finished
    sink.write_events(out)                          # at the end: events from the series

Each emitted frame gets one `FrameResult` row (its map brought to the frame's own size by the
engine's `upsample`, guided by the frame or bilinear), its
source's counters (`SourceRun`: frames, first/last timestamp, last frame index) and the run's
advance, a point in the (source, group) series events are detected from, and with `overlay` a
highlighted frame in its source's overlay (an H.264 video, PNGs for image groups). A frame read
live (`Frame.captured`) gets its capture-to-result latency in the row (`latency_s`) and in its
source's `LiveStats` (metrics). With a feed (`run.feed`), each window's records then go to the run's
observers, and a closed source's events. Rows are
flushed at least every `flush_every_s` seconds so readers see a slow stream's results.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from array import array
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from streamcosal.inference.engine import CoSalEngine, GroupPrediction
from streamcosal.inference.postprocess import FrameMask, postprocess
from streamcosal.io.frame import Frame, FrameSource
from streamcosal.io.images import ImageGroupSource
from streamcosal.run.interrupts import atomic
from streamcosal.run.observers import FrameRecord
from streamcosal.run.overlay import ImageOverlaySink, VideoSink, highlight
from streamcosal.run.records import gpu_default
from streamcosal.run.windows import Window
from streamcosal.storage import FrameResult, ResultWriter, detect_events, events_table, write_events
from streamcosal.storage.layout import remove_other_runs
from streamcosal.storage.masks import encode_prob_png, mask_stats
from streamcosal.storage.parquet_files import source_key

if TYPE_CHECKING:
    from streamcosal.run.feed import ResultFeed
    from streamcosal.run.metrics import LiveStats
    from streamcosal.run.records import PipelineConfig, RunReport, SourceRun

logger = logging.getLogger(__name__)


@dataclass
class Series:
    """Per (source, group): what events are detected from, kept compactly."""

    timestamps: array = field(default_factory=lambda: array("d"))
    frame_indices: array = field(default_factory=lambda: array("q"))
    area_fractions: array = field(default_factory=lambda: array("d"))


@dataclass
class Member:
    """One opened source of the group being processed, with its run record and overlay sink."""

    source: FrameSource
    run: SourceRun
    overlay_sink: VideoSink | ImageOverlaySink | None = None
    live: LiveStats | None = None  # a live source: its reader and latencies
    staged: bool = False  # its rows hidden until it closes (files, folders, pipes; not cameras)

    def overlay(self, image: np.ndarray, name: str, timestamp: float, folder: Path, fps: float) -> None:
        """Add one highlighted frame (a video for videos and streams, PNGs for image groups)."""
        if self.overlay_sink is None:
            key = source_key(self.run.source)
            is_images = isinstance(self.source, ImageGroupSource)
            self.overlay_sink = ImageOverlaySink(folder / key) if is_images else VideoSink(folder / f"{key}.mp4", fps)
        if isinstance(self.overlay_sink, VideoSink):
            self.overlay_sink.write(image, timestamp)
        else:
            self.overlay_sink.write(image, name)


def row_sources(member: Member) -> list[str]:
    """What the rows of a member's frames name as their source: its name, or an image group's files."""
    source = member.source
    return [str(p) for p in source.paths] if isinstance(source, ImageGroupSource) else [source.name]


def owners(members: list[Member]) -> dict[str, Member]:
    """Frame.source -> its member (an image group's frames name their files)."""
    return {name: m for m in members for name in row_sources(m)}


class ResultSink:
    """Writes what a run finds; one per run, shared by its groups. Groups running at once (in threads)
    may call it together: its writes (rows, counters, series, overlays, members) take turns on a lock;
    the masks of a window are made outside it."""

    def __init__(self, writer: ResultWriter, config: PipelineConfig, report: RunReport, engine: CoSalEngine,
                 overlays: Path, feed: ResultFeed | None = None):
        self.writer, self.config, self.report = writer, config, report
        self.feed = feed  # the run's observers get each window's frames once written (`run.feed`)
        self.engine = engine
        self.overlays = overlays
        self.series: dict[tuple[str, str], Series] = {}
        self.last_flush = time.monotonic()
        self._lock = threading.RLock()  # the writer, counters, series and overlays: one group at a time
        self.pool = ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1)), thread_name_prefix="streamcosal-host")
        """The run's host threads: each window's masks on a CPU engine; frames resized ahead of a GPU engine."""

    def write(self, group: str, window: Window, prediction: GroupPrediction, owner: dict[str, Member]) -> None:
        """Results (and overlays) of the window's emitted frames, at each frame's own size.

        prediction.maps: [N,S,S] for the window's N frames; similarity [N]. The emitted frames' masks are
        made first, all at once: on a GPU engine (or with ``config.postprocess_on_device``) in one batch on
        the engine's device (:mod:`streamcosal.inference.postprocess`), otherwise frame by frame on the
        host's cores (OpenCV's guided filter releases the GIL); then rows and overlays go in frame order.
        """
        emitted = [i for i, emit in enumerate(window.emit) if emit]
        if not emitted:
            return
        masks = self._masks([prediction.maps[i] for i in emitted], [window.frames[i].image for i in emitted])
        records = []
        with self._lock:
            for i, done in zip(emitted, masks):
                frame = window.frames[i]
                with atomic():  # its row and its overlay frame, or neither (Ctrl-C, SIGTERM)
                    record = self._write_frame(group, window.index, frame, done, float(prediction.similarity[i]),
                                               owner[frame.source])
                records.append((record, owner[frame.source].staged))
            if time.monotonic() - self.last_flush > self.config.flush_every_s:
                self.writer.flush()
                self.last_flush = time.monotonic()
        if self.feed is not None:  # outside the lock: other groups write meanwhile; may raise StopRun
            self.feed.frames(records)

    def _masks(self, maps: list[np.ndarray], images: list[np.ndarray]) -> list[FrameMask]:
        """Each frame's mask, area and mean probability from its [S,S] map, at the frame's size."""
        cfg = self.config
        if gpu_default(cfg.postprocess_on_device, self.engine.device):
            return postprocess(np.stack(maps), images, self.engine.upsampling, threshold=cfg.threshold,
                               device=self.engine.device, keep_probs=cfg.keep_prob_png)

        def on_host(prob_map: np.ndarray, image: np.ndarray) -> FrameMask:
            prob = self.engine.upsample(prob_map, image)
            mask, _, area, mean_prob = mask_stats(prob, cfg.threshold)
            return FrameMask(mask, area, mean_prob, prob if cfg.keep_prob_png else None)

        if len(maps) == 1:
            return [on_host(maps[0], images[0])]
        return list(self.pool.map(on_host, maps, images))

    def close(self) -> None:
        """Stop the host's worker threads."""
        self.pool.shutdown()

    def _write_frame(self, group: str, window: int, frame: Frame, done: FrameMask, similarity: float,
                     member: Member) -> FrameRecord:
        """One frame's row, counters, series point and overlay frame; ``done``: its mask. Returns its record."""
        cfg = self.config
        latency = time.time() - frame.captured if frame.captured is not None else None
        result = FrameResult(
            source=frame.source, group=group, window=window, frame_index=frame.index, timestamp=frame.timestamp,
            mask=done.mask, mean_prob=done.mean_prob, similarity=similarity, model_name=self.engine.name,
            model_version=self.engine.version, latency_s=latency,
            prob_png=encode_prob_png(done.prob) if done.prob is not None else None,
        )
        self.writer.write(result)
        if latency is not None and member.live is not None:
            member.live.record(latency)
        run = member.run
        run.frames += 1
        self.report.frames += 1
        if run.first_timestamp is None:
            run.first_timestamp = frame.timestamp
        run.last_timestamp, run.last_frame_index = frame.timestamp, frame.index
        series = self.series.setdefault((frame.source, group), Series())
        series.timestamps.append(frame.timestamp)
        series.frame_indices.append(frame.index)
        series.area_fractions.append(done.area)
        if cfg.overlay:
            rate = cfg.fps or (member.source.info.fps / cfg.stride) or 10.0
            member.overlay(highlight(frame.image, result.mask), frame.source, frame.timestamp, self.overlays, rate)
        return FrameRecord(self.report.run_id, frame.source, group, window, frame.index, frame.timestamp, done.area,
                           done.mean_prob, similarity, done.mask, frame.image, latency)

    def stage_member(self, member: Member) -> None:
        """Keep the member's rows hidden until :meth:`close_member`: a finite source's results appear
        whole, and a killed run's never do (``storage.layout.set_aside_unfinished``)."""
        member.staged = True
        with self._lock:
            for name in row_sources(member):
                self.writer.stage(name)

    def close_member(self, member: Member) -> None:
        """Make the member's rows visible; unless ``config.keep_history``, a staged member that is done
        (or partial: what its damaged file held) replaces what earlier runs wrote for its source (a
        camera's earlier runs are its history and stay). Then
        finish its overlay; its path goes to the member's run record."""
        try:
            with self._lock:
                self._close_member(member)
        finally:  # its events go to the observers once its rows are visible
            if self.feed is not None:
                self.feed.source_done(row_sources(member), member.run.group)

    def _close_member(self, member: Member) -> None:
        run = member.run
        failed: OSError | None = None
        try:
            for name in row_sources(member):
                self.writer.commit(name)
        except OSError as error:  # a full disk: what was written stays, the rest is reported
            failed = error
        saved = sum(self.writer.saved.get(name, 0) for name in row_sources(member))
        if saved < run.frames:  # report what is on disk, never more
            self.report.frames -= run.frames - saved
            run.error = run.error or f"{run.frames - saved} of its {run.frames} results could not be written"
            run.frames, run.status = saved, "partial" if saved else "failed"
        if member.staged and run.status in ("done", "partial") and not self.config.keep_history:
            for name in row_sources(member):
                remove_other_runs(self.writer.directory.parent, source_key(name), self.report.run_id)
        if failed is not None:
            raise failed
        if member.overlay_sink is not None:
            closed = member.overlay_sink.close()
            member.run.overlay = str(closed) if closed else None

    def write_events(self, out: Path) -> int:
        """Detect and write the events of every (source, group) with timestamps; their number."""
        cfg = self.config
        tables = []
        for (source, group), s in self.series.items():
            t = np.frombuffer(s.timestamps, dtype=np.float64)
            if len(t) == 0 or not np.all(np.isfinite(t)):
                continue  # image groups: no time, no events
            events = detect_events(t, np.frombuffer(s.frame_indices, dtype=np.int64),
                                   np.frombuffer(s.area_fractions, dtype=np.float64),
                                   cfg.event_threshold, cfg.event_min_duration, cfg.event_max_gap)
            tables.append(events_table(self.report.run_id, source, group, events))
        if not tables:
            return 0
        table = pa.concat_tables(tables)
        write_events(out, table)
        return table.num_rows


_DONE = object()


class SinkThread:
    """`ResultSink.write` calls run in order in one thread, at most ``maxsize`` windows behind: a
    window's upsampling, masks, rows and overlay frames overlap the engine's next window.

    An error of the thread (a full disk) is raised in the caller at its next write or on leaving the
    ``with``. Leaving, also by Ctrl-C or an error of the caller, first writes every window handed over
    (each frame's row and overlay frame together), then stops the thread: nothing segmented is lost.
    """

    def __init__(self, sink: ResultSink, maxsize: int = 2) -> None:
        self.sink = sink
        self._queue: queue.Queue[object] = queue.Queue(maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="streamcosal-sink", daemon=True)

    def __enter__(self) -> Callable[[str, Window, GroupPrediction, dict[str, Member]], None]:
        self._thread.start()
        return self.write

    def write(self, group: str, window: Window, prediction: GroupPrediction, owner: dict[str, Member]) -> None:
        self._raise()
        self._queue.put((group, window, prediction, owner))

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._queue.put(_DONE)
        self._thread.join()
        if kind is None:
            self._raise()
        elif self._error is not None:
            logger.warning("writing results also failed: %s", self._error)

    def _run(self) -> None:
        while (item := self._queue.get()) is not _DONE:
            if self._error is None:  # after an error, windows are dropped: the caller stops at its next write
                try:
                    self.sink.write(*item)  # type: ignore[misc]
                except BaseException as error:  # noqa: BLE001 - raised in the caller
                    self._error = error

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
