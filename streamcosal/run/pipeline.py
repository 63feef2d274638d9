"""The video/stream job: sources -> windows -> engine -> Parquet results, events, overlays.

    engine = CoSalEngine.from_pretrained()
    report = run_pipeline(["a.mp4", "b.mp4"], "results", engine)          # one group per video
    report = run_pipeline(["rtsp://cam1", "rtsp://cam2"], "results", engine, group="lobby")

Each group is the `group` given (every source in it: several cameras segment the object common
to all of them) or, without one, one group per source named after it (the file's stem).

Each group runs through four stages: prefetch (decoding and resizing run ahead of the engine in
a thread, `Prefetcher`) -> consensus (a `consensus.ConsensusStrategy`) -> segment (the engine)
-> sink (`sink.ResultSink`: maps to frame size, rows, events, overlays, counters; for files in its own
thread beside the engine, `sink.SinkThread`).

- global mode (finite sources: video files, image folders): `GlobalConsensus`, the consensus of
  `consensus_frames` frames sampled evenly over the WHOLE of every source of the group; every
  processed frame is segmented against it, `window` at a time.
- streaming mode (live streams, or any source on request): windows of `window` frames every
  `step` new frames, segmented against `StreamingConsensus`, the group's running consensus in the
  ConsensusStore (decayed with `half_life` seconds of stream time; a restarted stream continues
  from it). This costs one more classifier pass over the new frames.
- "auto" is global when every source of the group is finite, else streaming.

Live sources (streams and cameras; with `live` every source: a video file is then released by its
timestamps, a pipe as its writer writes) are read by a `LiveReader` each, in streaming mode, with
the drop policy; other sources give every frame, at the engine's pace.

Groups run one after another in the calling thread, unless a run with several groups has a live one
(which never ends; then every group runs in a thread of its own) or `parallel_groups` > 1 (files, that many
at a time; a GPU engine's default): taking turns on the engine, sink and store (`concurrent.run_concurrently`).

Outputs under `out` (a second run appends, never overwrites; paths spelled by storage.RunLayout):
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
import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import numpy as np
from filelock import FileLock
from rich.markup import escape
from rich.progress import Progress
from torch import Tensor

from streamcosal.inference.engine import ConsensusOfLogits, CoSalEngine, GroupPrediction
from streamcosal.inference.imagenet import top_classes
from streamcosal.io.file import Reader, VideoFileSource
from streamcosal.io.frame import FrameSource, SourceError
from streamcosal.io.images import ImageGroupSource
from streamcosal.io.nvdec import nvdec_built
from streamcosal.io.open import as_sources, open_source
from streamcosal.io.redact import redact
from streamcosal.io.stream import StreamSource
from streamcosal.run.batches import EngineBatches
from streamcosal.run.concurrent import Together, any_live, files_at_once, run_concurrently
from streamcosal.run.consensus import ConsensusStrategy, GlobalConsensus, StreamingConsensus, source_identity
from streamcosal.run.evidence import GroupEvidence
from streamcosal.run.feed import ResultFeed
from streamcosal.run.groups import default_groups, once
from streamcosal.run.interrupts import Interrupted, Terminated, atomic, stop_signals
from streamcosal.run.live import LiveReader, live_windows
from streamcosal.run.metrics import LiveMetrics
from streamcosal.run.observers import EventRecord, FrameRecord, Observer, StopRun, stop_name
from streamcosal.run.prefetch import Prefetcher, prepared_windows
from streamcosal.run.progress import estimated_frames, frame_progress
from streamcosal.run.prototypes import RunningPrototype
from streamcosal.run.records import PipelineConfig, RunReport, SourceRun, gpu_default, is_transient
from streamcosal.run.sink import Member, ResultSink, SinkThread, owners
from streamcosal.run.smoothing import TemporalSmoothing
from streamcosal.run.windows import Window, frames_per_window, global_windows, interleave, streaming_windows
from streamcosal.storage import ConsensusStore, ResultWriter
from streamcosal.storage.layout import UNFINISHED_DIR, RunLayout, new_run_id, set_aside_unfinished

logger = logging.getLogger(__name__)

T = TypeVar("T")
STORE_FILE = "consensus.npz"
STORE_SAVE_EVERY_S = 30.0  # streaming: save the consensus store at least this often


def run_pipeline(
    sources: str | Path | Iterable[str | Path],
    out: str | Path,
    engine: CoSalEngine,
    config: PipelineConfig | None = None,
    group: str | None = None,
    *, on_frame: Callable[[FrameRecord], object] | None = None, on_event: Callable[[EventRecord], object] | None = None,
    observers: Sequence[Observer] = (),
) -> RunReport:
    """Process `sources` (video files, stream URLs, cameras, image folders; one, or several) into `out`.

    group: one group for every source; default one group per source (see `group_name`).
    on_frame, on_event, observers: get each result and event as made, as config.webhook/mqtt do (docs/delivery.md).
    Returns the run's report (also saved in out/runs/); never raises for a bad source, a dropped
    stream or SIGTERM: see `RunReport.exit_code`. Ctrl-C raises `Interrupted` (a KeyboardInterrupt
    carrying the report) once everything done so far is saved.
    """
    config = config or PipelineConfig()
    sources = as_sources(sources)  # a generator is read once, here
    if not sources:
        raise ValueError("run_pipeline needs at least one source")
    window = frames_per_window(config.window, config.step, engine.device, any_live(sources, config.live))
    config = config.model_copy(update={"window": window})
    out = Path(out)
    run_id = config.run_id or new_run_id()
    layout = RunLayout(out, run_id)
    store = ConsensusStore.open(config.store_path or out / STORE_FILE, group_size=config.consensus_frames)
    engine.settle_precision(config.window)  # `auto` measured on a GPU: before the precision is recorded
    report = RunReport(run_id=run_id, out=str(out), model=f"{engine.name} {engine.version}",
                       started=datetime.now(UTC).isoformat(timespec="milliseconds"), cwd=os.getcwd(),
                       precision=engine.precision, device=str(engine.device))
    sources = once(sources, report)
    jobs = [(group, list(sources))] if group is not None else default_groups(sources, store, config.per_source)
    report.sources = [SourceRun(redact(str(spec)), name) for name, specs in jobs for spec in specs]
    feed = ResultFeed.for_run(run_id, config, observers, on_frame, on_event)  # a bad URL: ValueError, nothing written
    writer = ResultWriter(out, run_id, flush_every=config.flush_every, model=engine.model_metadata())
    metrics = LiveMetrics()
    start = time.perf_counter()
    with metrics.serving(config.metrics_port, config.metrics_host), contextlib.ExitStack() as held:
        layout.lock.parent.mkdir(parents=True, exist_ok=True)  # after the port is bound: a refused run writes nothing
        held.enter_context(FileLock(layout.lock))
        folder = out.stat()
        for killed, files in set_aside_unfinished(out).items():
            report.notes.append(f"run {killed} was killed before it finished: its {files} result files were moved "
                                f"to {out / UNFINISHED_DIR / killed} and are not part of the results")
            logger.warning("%s", report.notes[-1])
        held.enter_context(stop_signals())
        progress = held.enter_context(frame_progress(config.show_progress))
        sink = ResultSink(writer, config, report, engine, layout.overlays, feed)
        on_gpu = config.decoder == "auto" and engine.device.type == "cuda" and nvdec_built()
        job = _Job(engine, config, store, sink, report, progress, metrics,
                   reader="nvdec" if config.decoder == "nvdec" or on_gpu else "auto")
        try:
            runs = iter(report.sources)
            groups = [(name, specs, [next(runs) for _ in specs]) for name, specs in jobs]
            live = any_live(sources, config.live)  # a live group never ends: every group at once
            workers = files_at_once(config.parallel_groups, engine.device)
            batched = engine.device.type == "cuda" if config.batch_groups is None else config.batch_groups
            job.batches = EngineBatches(engine) if batched and not live else None  # files at once: windows batched
            if len(groups) > 1 and (live or workers > 1):
                run_concurrently(job, groups, None if live else workers)
            else:
                for name, specs, group_runs in groups:
                    job.run_group(name, specs, group_runs)
            feed.raise_if_stopped(report.sources)
        except (KeyboardInterrupt, Terminated, StopRun) as stop:
            report.interrupted = stop_name(stop)
            for run in report.sources:
                if run.status == "running":
                    run.status = "interrupted"
            logger.warning("run %s stopped by %s: keeping the %d results done", run_id, report.interrupted, report.frames)
        finally:  # each is tried, even when another fails (a full disk): the report says what was not saved
            _final_write(report, f"the last results (the {len(writer.files)} files before them in "
                                 f"{writer.directory} are complete)", writer.close)
            _final_write(report, "the consensus store", store.save)
            report.consensus = {name: top_classes(store.consensus(name)) for name, _ in jobs if name in store}
            sink.close()
            report.events = _final_write(report, "the events", lambda: sink.write_events(out)) or 0
            feed.finish(report)  # the events not handed over yet; the deliveries' last tries (`DeliveryPolicy.drain_s`)
            report.seconds = time.perf_counter() - start
            if not _same_folder(out, folder):
                report.errors.append(f"the results folder {out} was deleted or replaced during the run: the results "
                                     "written before are lost; run again")
                for run in report.sources:
                    run.status = "failed" if run.status in ("done", "partial") else run.status
            _final_write(report, "the run report", lambda: report.save(layout.report))
    if report.interrupted == "SIGINT":
        raise Interrupted(report)
    return report


def _same_folder(path: Path, before: os.stat_result) -> bool:
    """Whether ``path`` is still the folder whose ``stat`` was ``before`` (not deleted, not replaced)."""
    try:
        now = path.stat()
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (before.st_dev, before.st_ino)


def _final_write(report: RunReport, what: str, write: Callable[[], T]) -> T | None:
    """``write()``; an OSError (a full disk) is recorded in ``report.errors``, not raised."""
    try:
        return write()
    except OSError as error:
        where = f" {error.filename}" if error.filename else ""
        report.errors.append(f"{what} not saved: cannot write{where}: {error.strerror or error}")
        logger.warning("%s", report.errors[-1])
        return None


@dataclass
class _Job:
    """The state one run shares across its groups."""

    engine: CoSalEngine
    config: PipelineConfig
    store: ConsensusStore
    sink: ResultSink
    report: RunReport
    progress: Progress
    metrics: LiveMetrics
    last_log: float = field(default_factory=time.monotonic)
    together: Together | None = None  # groups running at once (threads): what they share; None: one at a time
    reader: Reader = "auto"  # video files' (`PipelineConfig.decoder` resolved for the engine's device)
    batches: EngineBatches | None = None  # groups of files at once: their windows segmented in batches

    def run_group(self, group: str, specs: list[str | Path], runs: list[SourceRun]) -> None:
        """Open the group's sources, segment every window, write results; failures go to `runs`."""
        cfg = self.config
        members: list[Member] = []
        try:
            for spec, run in zip(specs, runs):
                try:  # its own stride or fps where it has one (`PipelineConfig.per_source`)
                    source = open_source(spec, reader=self.reader, reconnect=cfg.reconnect, **cfg.sampling(run.source))
                except SourceError as error:
                    run.status, run.error = "failed", str(error)
                    logger.info("%s", error)
                    continue
                run.status = "running"
                members.append(Member(source, run))
                if not (cfg.live or isinstance(source, StreamSource)):
                    self.sink.stage_member(members[-1])
            if not members:
                return
            try:
                self._segment_group(group, members)
            except (SourceError, OSError, RuntimeError, ValueError) as error:
                message = f"group {group!r}: stopped after {sum(m.run.frames for m in members)} frames: {error}"
                logger.info("%s", message)
                for m in members:
                    m.run.status, m.run.error, m.run.transient = "failed", message, is_transient(error)
                return
            for m in members:
                bad = m.source.report
                lost = bad.truncated or bad.bad_packets or bad.corrupt_frames or bad.unreadable_files
                m.run.status = "partial" if lost else "done"
        finally:
            with atomic():  # a stop signal waits until every member is closed and the store saved
                for m in members:
                    m.run.warnings, m.run.decoder = list(m.source.report.warnings), m.source.decoder
                    try:
                        self.sink.close_member(m)
                    except OSError as error:  # the overlay video could not be finished (a full disk)
                        m.run.status = "failed" if m.run.status == "failed" else "partial"
                        m.run.error = m.run.error or str(error)
                    if m.live is None:  # a live reader closes its own source
                        m.source.close()
                with contextlib.suppress(OSError), self.together.store if self.together else contextlib.nullcontext():
                    self.store.save()  # an error: the run's end saves it again and reports it

    def _segment_group(self, group: str, members: list[Member]) -> None:
        """The loop: prefetch -> consensus -> segment (against the group's running object
        prototype) -> temporal smoothing -> sink."""
        cfg, engine = self.config, self.engine
        sources = [m.source for m in members]
        mode = self._mode(sources)
        size = engine.size_for(shape for s in sources for shape in s.frame_shapes())
        for m in members:
            m.run.mode, m.run.input_size = mode, size
        owner = owners(members)
        live = cfg.live or (mode == "streaming" and all(isinstance(s, StreamSource) for s in sources))
        totals = [None if live else estimated_frames(m.source.info, **cfg.sampling(m.run.source)) for m in members]
        task = self.progress.add_task(escape(f"{group} ({mode})"), total=None if None in totals else sum(totals))
        consensus = self._consensus(mode, group, sources, size)
        prototype = RunningPrototype(cfg.half_life if mode == "streaming" else None, recent=cfg.window)
        smoothing = TemporalSmoothing() if cfg.temporal_smoothing else None
        evidence = GroupEvidence(group)  # one frame, two objects, none: said in the run's notes at the end
        # files: results are written in a thread beside the engine's next window; live: before the next window
        # is taken, so that the windows' sizing for --max-latency counts the writing too
        writing = contextlib.nullcontext(self.sink.write) if live else SinkThread(self.sink)
        with self._prefetch(mode, members, live, size) as prepared, writing as write:
            for window, x in prepared:
                if self.together is not None:
                    self.together.check()  # the run is stopping: GroupStopped
                prediction = self._segment(x, consensus(window), prototype.prior(window))
                prototype.add(window, prediction)
                evidence.add(window, prediction)
                if smoothing is not None:  # what is written; the prototype keeps the engine's maps
                    prediction = replace(prediction, maps=smoothing(window, prediction.maps))
                write(group, window, prediction, owner)
                self.progress.advance(task, sum(window.emit))
                if live and time.monotonic() - self.last_log > cfg.log_every_s:
                    self.metrics.log()
                    self.last_log = time.monotonic()
        if self.together is not None:
            self.together.check()  # live windows end when the run stops: the group was stopped, not done
        self.report.notes += evidence.notes(cfg.threshold)

    @contextlib.contextmanager
    def _prefetch(self, mode: str, members: list[Member], live: bool,
                  size: int) -> Iterator[Iterator[tuple[Window, Tensor]]]:
        """The group's windows, prepared for the engine at `size`: decoded ahead in a `Prefetcher` (files), or
        read by a `LiveReader` per live source (its drop policy) and taken when the engine asks."""
        cfg = self.config
        threads = gpu_default(cfg.prepare_in_threads, self.engine.device)
        prepare, pool = functools.partial(self.engine.prepare, size=size), self.sink.pool if threads else None
        if not live:
            windows = _windows(mode, [m.source for m in members], cfg)
            with Prefetcher(prepared_windows(windows, prepare, pool), maxsize=cfg.prefetch_windows) as prepared:
                yield prepared
            return
        until = time.monotonic() + cfg.duration if cfg.duration is not None else None
        readers = [LiveReader(m.source, cfg.for_source(m.run.source).drop_policy, cfg.live_buffer,
                              paced=isinstance(m.source, VideoFileSource)) for m in members]
        latency = cfg.group_latency(m.run.source for m in members)
        for m, reader in zip(members, readers):
            m.live = self.metrics.add(reader, m.run)
        if self.together is not None:
            self.together.add_readers(readers)
        try:
            windows = live_windows(readers, cfg.window, cfg.step, until=until, warn_after_s=cfg.stall_warning_s,
                                   max_latency_s=latency, stop=self.together.stop if self.together else None,
                                   waited=self.together.engine.waited if self.together else None)
            yield prepared_windows(windows, prepare, pool)
        finally:
            for m, reader in zip(members, readers):
                reader.close()
                m.run.live = m.live.summary(latency) if m.live else None
        failed = next((r for r in readers if r.error is not None), None)
        if failed is not None:
            raise SourceError(f"{failed.name}: reading stopped: {failed.error}")

    def _mode(self, sources: list[FrameSource]) -> str:
        """The configured mode; "auto" is global when every source is finite; `live` is streaming."""
        if self.config.live:
            images = next((s.name for s in sources if isinstance(s, ImageGroupSource)), None)
            if images is not None:
                raise SourceError(f"{images}: images have no timestamps to be read live by; leave out --live")
            return "streaming"
        finite = all(s.info.frame_count for s in sources)
        mode = self.config.mode if self.config.mode != "auto" else ("global" if finite else "streaming")
        if mode == "global" and not finite:
            live = next(s.name for s in sources if not s.info.frame_count)
            raise SourceError(f"{live}: a live stream has no whole video to sample the consensus from; "
                              "use --mode streaming")
        return mode

    def _consensus(self, mode: str, group: str, sources: list[FrameSource], size: int) -> ConsensusStrategy:
        engine = self.engine

        def logits(x: Tensor) -> Tensor:
            return self._timed(engine.logits, x)

        if mode == "global":
            return GlobalConsensus.sample(group, sources, self.config.consensus_frames,
                                          lambda f: engine.prepare(f.image, size), logits, self.store)
        streaming = StreamingConsensus(group, self.store, self.config.half_life, STORE_SAVE_EVERY_S,
                                       source=source_identity(sources))
        return self.together.consensus(streaming) if self.together is not None else streaming

    def _segment(self, x: Tensor, consensus: Tensor | ConsensusOfLogits, prior: list[np.ndarray] | None) -> GroupPrediction:
        """A window's segmentation; while groups of files run at once, batched with theirs (`EngineBatches`)."""
        if self.together is None or self.batches is None:
            return self._timed(self.engine.segment, x, consensus, prior)
        prediction, seconds = self.batches.segment(x, consensus, prior, self.together.engine)
        self.report.engine_seconds += seconds
        return prediction

    def _timed(self, fn: Callable[..., T], x: Tensor, *args: object) -> T:
        """An engine call on x [N,3,S,S], timed; while groups run at once, in this group's turn on the engine."""
        with self.together.engine.turn(len(x)) if self.together else contextlib.nullcontext():
            start = time.perf_counter()
            try:
                return fn(x, *args)
            finally:
                self.report.engine_seconds += time.perf_counter() - start


def _windows(mode: str, sources: list[FrameSource], cfg: PipelineConfig) -> Iterator[Window]:
    """Global: consecutive windows; streaming: overlapping ones (`step`); several sources interleaved."""
    if len(sources) > 1:
        return interleave(sources, max(1, cfg.window // len(sources)))
    if mode == "global":
        return global_windows(sources[0], cfg.window)
    return streaming_windows(sources[0], cfg.window, cfg.step)
