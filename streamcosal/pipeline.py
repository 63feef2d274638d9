"""The video/stream job: sources -> windows -> engine -> Parquet results, events, overlays.

    engine = CoSalEngine.from_pretrained()
    report = run_pipeline(["a.mp4", "b.mp4"], "results", engine)          # one group per video
    report = run_pipeline(["rtsp://cam1", "rtsp://cam2"], "results", engine, group="lobby")

Each group is the `group` given (every source in it: several cameras segment the object common
to all of them) or, without one, one group per source named after it (the file's stem).

- global mode (finite sources: video files, image folders): the consensus is GICD's consensus
  (softmax of the summed logits) of `consensus_frames` frames sampled evenly over the WHOLE of
  every source of the group; every processed frame is segmented against it, `window` at a time.
- streaming mode (live streams, or any source on request): windows of `window` frames every
  `step` new frames; the consensus is the group's running consensus in the ConsensusStore: the
  logits of each window's new frames are added (older evidence decayed with `half_life` seconds
  of stream time) and the window is segmented against the result. The store is saved as the run
  goes, so a restarted stream continues from its consensus (its stream time continues from the
  group's last time in the store). This costs one more classifier pass over the new frames.
- "auto" is global when every source of the group is finite, else streaming.

Both modes leave the group's consensus in the store, where `streamcosal search` finds it.
Decoding and resizing run ahead of the engine in a thread (`Prefetcher`).

Outputs under `out` (a second run appends, never overwrites):
    frames/...                    per-frame results, Parquet by source (storage.ResultWriter)
    events/...                    intervals in which the object is present (storage.write_events)
    consensus.npz                 the consensus store (or `config.store_path`)
    overlays/<run_id>/<key>.mp4   with `overlay`: H.264 per video/stream (key: the source's
                                  partition key); image groups get <key>/<stem>.png + contact sheet
    runs/<run_id>.json            the run report (`RunReport`)

Ctrl-C (SIGINT) or SIGTERM stops the run: the results done so far are written, overlays
finished, events written, the store and the report saved; `RunReport.exit_code` is then 130 or
143. A source that cannot be opened or fails midway is reported and the other groups still run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import pyarrow as pa
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from torch import Tensor

from .engine import CoSalEngine, GroupPrediction, resize_map
from .model import consensus_from_logits
from .overlay import ImageOverlaySink, VideoSink, highlight
from .prefetch import Prefetcher
from .sources import (
    FrameSource,
    ImageGroupSource,
    ReconnectPolicy,
    SourceError,
    VideoInfo,
    open_source,
)
from .storage import (
    ConsensusStore,
    FrameResult,
    ResultWriter,
    detect_events,
    events_table,
    write_events,
)
from .storage.parquet_files import source_key
from .windows import (
    Window,
    global_windows,
    interleave,
    sample_consensus_frames,
    streaming_windows,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
Mode = Literal["auto", "global", "streaming"]
Status = Literal["pending", "running", "done", "partial", "failed", "interrupted"]
STORE_FILE = "consensus.npz"
STORE_SAVE_EVERY_S = 30.0  # streaming: save the consensus store at least this often


@dataclass
class PipelineConfig:
    """Settings of a run; the defaults are usable."""

    mode: Mode = "auto"
    window: int = 8  # frames segmented together
    step: int | None = None  # streaming, one source: new frames per window (< window overlaps); default window
    stride: int = 1  # process every stride-th frame ...
    fps: float | None = None  # ... or about fps frames per second (then stride must be 1)
    consensus_frames: int = 32  # global: frames sampled over the whole group for its consensus
    half_life: float = 30.0  # streaming: seconds of stream time after which old evidence weighs half
    threshold: float = 0.5  # mask = probability >= threshold
    overlay: bool = False  # write overlay videos (PNGs + contact sheet for image groups)
    keep_prob_png: bool = False  # store a small probability PNG per frame in the results
    event_threshold: float = 0.02  # events: the object is present when its area fraction >= this
    event_min_duration: float = 0.5  # events: shorter intervals (seconds) are dropped
    event_max_gap: float = 0.5  # events: absences up to this long (seconds) are bridged
    store_path: Path | None = None  # default: out/consensus.npz
    flush_every: int = 256  # results rows per Parquet file ...
    flush_every_s: float = 10.0  # ... or fewer, so readers see a slow stream's results this soon
    prefetch_windows: int = 2  # windows decoded ahead of the engine
    reconnect: ReconnectPolicy | None = None  # live streams (default ReconnectPolicy())
    run_id: str | None = None  # default: UTC time + random suffix
    show_progress: bool = False  # rich progress bar on stderr

    def check(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1 frame, got {self.window}")
        if self.step is not None and not 1 <= self.step <= self.window:
            raise ValueError(f"step must be in 1..window ({self.window}), got {self.step}")
        if self.fps is not None and self.stride != 1:
            raise ValueError("give either fps or stride, not both")
        if self.consensus_frames < 1:
            raise ValueError(f"consensus_frames must be >= 1, got {self.consensus_frames}")
        if not self.half_life > 0:
            raise ValueError(f"half_life must be > 0 seconds, got {self.half_life}")
        if self.mode not in ("auto", "global", "streaming"):
            raise ValueError(f"mode must be auto, global or streaming, got {self.mode!r}")


@dataclass
class SourceRun:
    """What happened to one source."""

    source: str
    group: str
    status: Status = "pending"
    mode: str = ""
    frames: int = 0  # results written
    first_timestamp: float | None = None
    last_timestamp: float | None = None
    last_frame_index: int | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    overlay: str | None = None


@dataclass
class RunReport:
    """What a run did; saved as out/runs/<run_id>.json."""

    run_id: str
    out: str
    model: str
    started: str  # UTC, ISO 8601
    precision: str = ""  # what ran (fp32, bf16, fp16): "auto" resolved for the device
    device: str = ""
    seconds: float = 0.0  # wall time of the whole run
    engine_seconds: float = 0.0  # time spent in the engine (classifier passes and segmentation)
    frames: int = 0  # results written
    events: int = 0
    interrupted: str | None = None  # "SIGINT" or "SIGTERM" when the run was stopped
    sources: list[SourceRun] = field(default_factory=list)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0 all done; 1 a source failed or lost frames; 130 (SIGINT) / 143 (SIGTERM) stopped."""
        if self.interrupted:
            return 130 if self.interrupted == "SIGINT" else 143
        return 1 if any(s.status in ("failed", "partial") for s in self.sources) else 0

    def save(self, path: Path) -> None:
        """Write the report as JSON, atomically."""
        data = {**asdict(self), "frames_per_s": self.frames_per_s, "exit_code": self.exit_code}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.write_text(json.dumps(data, indent=2, default=str))
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


class Terminated(BaseException):
    """SIGTERM arrived; raised in the main thread so the run stops the way Ctrl-C stops it."""


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def group_name(spec: str | Path) -> str:
    """The default group of a source: a file's stem, a folder's name, a URL as it is."""
    text = str(spec)
    if "://" in text or text.startswith("/dev/video"):
        return text
    path = Path(text)
    return path.name if path.is_dir() else path.stem


def run_pipeline(
    sources: Sequence[str | Path],
    out: str | Path,
    engine: CoSalEngine,
    config: PipelineConfig | None = None,
    group: str | None = None,
) -> RunReport:
    """Process `sources` (video files, stream URLs, cameras, image folders) into `out`.

    group: one group for every source; default one group per source (see `group_name`).
    Returns the run's report (also saved in out/runs/); never raises for a bad source, a dropped
    stream or Ctrl-C/SIGTERM: see `RunReport.exit_code`.
    """
    config = config or PipelineConfig()
    config.check()
    if not sources:
        raise ValueError("run_pipeline needs at least one source")
    out = Path(out)
    run_id = config.run_id or new_run_id()
    jobs = [(group, list(sources))] if group is not None else [(group_name(s), [s]) for s in sources]
    report = RunReport(run_id=run_id, out=str(out), model=f"{engine.name} {engine.version}",
                       started=datetime.now(UTC).isoformat(timespec="seconds"),
                       precision=engine.precision, device=str(engine.device))
    report.sources = [SourceRun(str(spec), name) for name, specs in jobs for spec in specs]
    store = ConsensusStore.open(config.store_path or out / STORE_FILE)
    writer = ResultWriter(out, run_id, flush_every=config.flush_every, model=engine.model_metadata())
    start = time.perf_counter()
    with _sigterm_raises(), _progress(config.show_progress) as progress:
        job = _Job(engine, config, out, run_id, store, writer, report, progress)
        try:
            runs = iter(report.sources)
            for name, specs in jobs:
                job.run_group(name, specs, [next(runs) for _ in specs])
        except (KeyboardInterrupt, Terminated) as stop:
            report.interrupted = "SIGINT" if isinstance(stop, KeyboardInterrupt) else "SIGTERM"
            for run in report.sources:
                if run.status == "running":
                    run.status = "interrupted"
            logger.warning("run %s stopped by %s: keeping the %d results done", run_id, report.interrupted, report.frames)
        finally:
            writer.close()
            store.save()
            report.events = job.write_events()
            report.seconds = time.perf_counter() - start
            report.save(out / "runs" / f"{run_id}.json")
    return report


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises `Terminated` in the main thread (once: a second one is ignored
    so the cleanup can finish)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} frames/s" if speed else "-- frames/s")


def _progress(show: bool) -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(), TimeRemainingColumn())
    return Progress(*columns, console=Console(stderr=True), disable=not show)


def estimated_frames(info: VideoInfo, stride: int, fps: float | None) -> int | None:
    """How many frames a finite source will give with this sampling (None when unknown)."""
    if not info.frame_count:
        return None
    if fps is not None:
        if info.duration and info.fps > fps:
            return min(info.frame_count, math.ceil(info.duration * fps))
        return info.frame_count
    return math.ceil(info.frame_count / stride)


@dataclass
class _Series:
    """Per (source, group): what events are detected from, kept compactly."""

    timestamps: array = field(default_factory=lambda: array("d"))
    frame_indices: array = field(default_factory=lambda: array("q"))
    area_fractions: array = field(default_factory=lambda: array("d"))


@dataclass
class _Member:
    """One opened source of the group being processed, with its run record and overlay sink."""

    source: FrameSource
    run: SourceRun
    sink: VideoSink | ImageOverlaySink | None = None

    def overlay(self, image: np.ndarray, name: str, timestamp: float, folder: Path, fps: float) -> None:
        """Add one highlighted frame (a video for videos and streams, PNGs for image groups)."""
        if self.sink is None:
            key = source_key(self.run.source)
            is_images = isinstance(self.source, ImageGroupSource)
            self.sink = ImageOverlaySink(folder / key) if is_images else VideoSink(folder / f"{key}.mp4", fps)
        if isinstance(self.sink, VideoSink):
            self.sink.write(image, timestamp)
        else:
            self.sink.write(image, name)


def _prepared(windows: Iterable[Window], engine: CoSalEngine) -> Iterator[tuple[Window, Tensor]]:
    """Windows with their frames resized for the engine: (window, [N,3,S,S] in [0,1])."""
    for window in windows:
        yield window, torch.stack([engine.prepare(f.image) for f in window.frames])


@dataclass
class _Job:
    """The state one run shares across its groups."""

    engine: CoSalEngine
    config: PipelineConfig
    out: Path
    run_id: str
    store: ConsensusStore
    writer: ResultWriter
    report: RunReport
    progress: Progress
    series: dict[tuple[str, str], _Series] = field(default_factory=dict)
    last_flush: float = field(default_factory=time.monotonic)

    def run_group(self, group: str, specs: list[str | Path], runs: list[SourceRun]) -> None:
        """Open the group's sources, segment every window, write results; failures go to `runs`."""
        cfg = self.config
        members: list[_Member] = []
        try:
            for spec, run in zip(specs, runs):
                try:
                    source = open_source(spec, fps=cfg.fps, stride=cfg.stride, reconnect=cfg.reconnect)
                except SourceError as error:
                    run.status, run.error = "failed", str(error)
                    logger.info("%s", error)
                    continue
                run.status = "running"
                members.append(_Member(source, run))
            if not members:
                return
            try:
                self._segment_group(group, members)
            except (SourceError, OSError, RuntimeError, ValueError) as error:
                message = f"group {group!r}: stopped after {sum(m.run.frames for m in members)} frames: {error}"
                logger.info("%s", message)
                for m in members:
                    m.run.status, m.run.error = "failed", message
                return
            for m in members:
                bad = m.source.report
                lost = bad.truncated or bad.bad_packets or bad.corrupt_frames or bad.unreadable_files
                m.run.status = "partial" if lost else "done"
        finally:
            for m in members:
                m.run.warnings = list(m.source.report.warnings)
                if m.sink is not None:
                    closed = m.sink.close()
                    m.run.overlay = str(closed) if closed else None
                m.source.close()
            self.store.save()

    def _segment_group(self, group: str, members: list[_Member]) -> None:
        cfg, engine = self.config, self.engine
        sources = [m.source for m in members]
        finite = all(s.info.frame_count for s in sources)
        mode = cfg.mode if cfg.mode != "auto" else ("global" if finite else "streaming")
        if mode == "global" and not finite:
            live = next(s.name for s in sources if not s.info.frame_count)
            raise SourceError(f"{live}: a live stream has no whole video to sample the consensus from; "
                              "use --mode streaming")
        owner: dict[str, _Member] = {}  # Frame.source -> its member (an image group's frames name their files)
        for m in members:
            m.run.mode = mode
            names = [str(p) for p in m.source.paths] if isinstance(m.source, ImageGroupSource) else [m.source.name]
            owner.update(dict.fromkeys(names, m))
        base_t = self.store.state(group).t if group in self.store else 0.0
        last_t = base_t
        totals = [estimated_frames(s.info, cfg.stride, cfg.fps) for s in sources]
        task = self.progress.add_task(f"{group} ({mode})", total=None if None in totals else sum(totals))

        consensus: Tensor | None = None
        if mode == "global":
            per_source = math.ceil(cfg.consensus_frames / len(sources))
            sampled = [f for s in sources for f in sample_consensus_frames(s, per_source)]
            if not sampled:
                raise SourceError(f"group {group!r}: no frame could be read to compute the consensus")
            logits = self._timed(engine.logits, torch.stack([engine.prepare(f.image) for f in sampled]))
            consensus = consensus_from_logits(logits)
            times = [f.timestamp for f in sampled if math.isfinite(f.timestamp)]
            self.store.update(group, logits.numpy(), t=base_t + max(times, default=0.0))
            windows = global_windows(sources[0], cfg.window) if len(sources) == 1 else \
                interleave(sources, max(1, cfg.window // len(sources)))
        else:
            windows = streaming_windows(sources[0], cfg.window, cfg.step) if len(sources) == 1 else \
                interleave(sources, max(1, cfg.window // len(sources)))

        last_save = time.monotonic()
        with Prefetcher(_prepared(windows, engine), maxsize=cfg.prefetch_windows) as prepared:
            for window, x in prepared:
                if mode == "streaming":
                    new = [i for i, emit in enumerate(window.emit) if emit]
                    logits = self._timed(engine.logits, x[new])
                    times = [f.timestamp for f in window.frames if math.isfinite(f.timestamp)]
                    last_t = max(last_t, base_t + (max(times) if times else window.index))
                    running = self.store.update(group, logits.numpy(), t=last_t, half_life=cfg.half_life)
                    consensus = torch.from_numpy(running)[None]
                    if time.monotonic() - last_save > STORE_SAVE_EVERY_S:
                        self.store.save()
                        last_save = time.monotonic()
                prediction = self._timed(engine.segment, x, consensus)
                self._emit(group, window, prediction, owner)
                if time.monotonic() - self.last_flush > cfg.flush_every_s:
                    self.writer.flush()
                    self.last_flush = time.monotonic()
                self.progress.advance(task, sum(window.emit))

    def _timed(self, fn: Callable[..., T], *args: object) -> T:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.report.engine_seconds += time.perf_counter() - start

    def _emit(self, group: str, window: Window, prediction: GroupPrediction, owner: dict[str, _Member]) -> None:
        """Results (and overlays) of the window's emitted frames, at each frame's own size."""
        cfg, engine = self.config, self.engine
        for i, (frame, emit) in enumerate(zip(window.frames, window.emit)):
            if not emit:
                continue
            prob = resize_map(prediction.maps[i], frame.image.shape[:2])
            result = FrameResult.from_prob(
                source=frame.source, group=group, window=window.index, frame_index=frame.index,
                timestamp=frame.timestamp, prob=prob, similarity=float(prediction.similarity[i]),
                model_name=engine.name, model_version=engine.version, threshold=cfg.threshold,
                keep_prob_png=cfg.keep_prob_png,
            )
            self.writer.write(result)
            member = owner[frame.source]
            run = member.run
            run.frames += 1
            self.report.frames += 1
            if run.first_timestamp is None:
                run.first_timestamp = frame.timestamp
            run.last_timestamp, run.last_frame_index = frame.timestamp, frame.index
            series = self.series.setdefault((frame.source, group), _Series())
            series.timestamps.append(frame.timestamp)
            series.frame_indices.append(frame.index)
            series.area_fractions.append(float(result.mask.mean()))
            if cfg.overlay:
                rate = cfg.fps or (member.source.info.fps / cfg.stride) or 10.0
                member.overlay(highlight(frame.image, result.mask), Path(frame.source).stem, frame.timestamp,
                               self.out / "overlays" / self.run_id, rate)

    def write_events(self) -> int:
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
            tables.append(events_table(self.run_id, source, group, events))
        if not tables:
            return 0
        table = pa.concat_tables(tables)
        write_events(self.out, table)
        return table.num_rows
