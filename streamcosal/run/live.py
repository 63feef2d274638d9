"""Live sources read at their own pace: a reader thread per camera, a small buffer, a drop policy.

    readers = [LiveReader(source, policy="latest") for source in cameras]
    for window in live_windows(readers, window=8, step=8, max_latency_s=1.0):
        ...                                  # segment; the cameras keep being read meanwhile
    for r in readers: r.close()

A camera sends its frames whether or not the engine keeps up. Each `LiveReader` reads one live
source (`StreamSource`: RTSP, HTTP, UDP, /dev/video, which reconnects by itself; with `--live`
any video file or pipe too) in its own thread, always at the source's pace, stamps every frame
with the wall-clock time it arrived (`Frame.captured`) and keeps it in a buffer of `capacity`
frames. What the engine gets is the policy's:

- `latest` (default for live): each window takes the newest frames; older frames not processed
  yet are dropped. Latency stays about one window's engine time, whatever the engine's rate,
  and with `max_latency_s` the windows are sized to keep it within that (below).
- `stride`: keep every k-th frame, k = ceil(1.2 x source fps / measured engine rate), adapted as
  the engine's rate changes; frames are processed in order, evenly spaced in time. A backlog of
  more than two windows (the engine slowed down) is dropped, oldest first.
- `all`: never drop. When the buffer is full the reader waits for the engine, so the camera backs
  up in the network and decoder and latency grows for as long as the engine is slower than the
  camera (by 1 - engine rate / camera fps seconds every second). For recorded streams.

A recorded source read live (`paced`: a video file with `--live`) is released like a camera
replaying it: a frame enters the buffer when the wall time since the first frame's reaches its
timestamp (decoded a little ahead; a frame decoded late enters at once). A pipe read live is paced
by its writer, like a stream.

Whatever is dropped is counted per source (`LiveCounters`); frame indices and timestamps stay the
source's own. Several cameras in one group: `live_windows` takes the newest frames of each camera
for a window and waits at most `stall_s` for a camera that has none, so a camera that stalls or
reconnects does not hold the others back.

Bounded latency (`latest` and `stride`): a frame's latency is at most the wait for its window's
frames plus the window's processing, so `live_windows` sizes each window from the measured engine
time (`WindowSize`): with t the moving average of the engine's seconds per frame (everything
between handing a window out and being asked for the next, divided by its frames), c cameras and
a camera interval d = 1 / fps, a window takes n = floor(max_latency_s / (c t + d)) frames of each
camera, at least 1 and at most the configured window. The first window has one frame (nothing
is measured yet); a slow engine shrinks the windows, a faster one grows them back. Streaming mode
segments every frame against the group's running consensus, so a small window costs speed (a
fixed cost per window), not accuracy. The floor is one frame: an engine that needs more than
max_latency_s for one frame gives that frame's time. `all` keeps the configured window (every
frame is processed anyway; its latency grows as said above).

Groups sharing the engine (several live groups running at once, `concurrent`): a window also waits
for the other groups' turns on the engine, a wait per window whatever its size. `live_windows` is
told how long (`waited`) and sizes the windows as n = floor((max_latency_s - w) / (c t + d)), w the
moving average of that wait, t measured without it; one group alone never waits (w = 0). Counting
the wait per frame instead would make the group with the smaller windows see a larger t and keep
its windows small: two cameras on a saturated engine settled at 4 and 2 frames a window.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import get_args

from streamcosal.io.frame import Frame, FrameSource
from streamcosal.params import DropPolicy
from streamcosal.run.windows import Window

logger = logging.getLogger(__name__)

DROP_POLICIES: tuple[DropPolicy, ...] = get_args(DropPolicy)
STRIDE_HEADROOM = 1.2  # stride: keep 1/1.2 of what the engine could take, so a backlog drains
SMOOTHING = 0.3  # weight of the newest window in the engine's measured rate and time per frame


@dataclass
class LiveCounters:
    """What a reader saw. Updated under the reader's lock; read without it, they are a recent value."""

    received: int = 0  # frames decoded from the source
    dropped: int = 0  # frames the policy dropped (never processed)
    taken: int = 0  # frames handed to the engine
    last_captured: float | None = None  # wall clock of the last frame received


@dataclass
class WindowSize:
    """Frames per camera of the next live window, so that one window's wait and processing stay
    within `max_latency_s` (see the module): n = floor((max_latency_s - w) / (cameras x t + interval_s)),
    clamped to 1..`largest`, t the moving average of the engine's seconds per frame, w that of the
    wait per window for other groups' turns on a shared engine (0 alone). `max_latency_s` None:
    always `largest`."""

    largest: int  # frames per camera of a configured window
    max_latency_s: float | None
    cameras: int = 1
    interval_s: float = 0.0  # the slowest camera's seconds between frames (0: unknown)
    per_frame_s: float | None = None  # the engine's seconds per frame, moving average
    wait_s: float = 0.0  # the wait per window for the engine (other groups' turns), moving average

    @property
    def frames(self) -> int:
        if self.max_latency_s is None:
            return self.largest
        if self.per_frame_s is None:
            return 1
        fit = math.floor((self.max_latency_s - self.wait_s) / (self.cameras * self.per_frame_s + self.interval_s))
        return max(1, min(self.largest, fit))

    def measured(self, frames: int, seconds: float, waited_s: float = 0.0) -> None:
        """The engine took `seconds` for a window of `frames` frames (all cameras, context included),
        `waited_s` of them waiting for other groups' turns on it."""
        if frames > 0 and seconds > 0:
            t, waited_s = max(seconds - waited_s, 0.0) / frames, min(waited_s, seconds)
            if self.per_frame_s is None:
                self.per_frame_s, self.wait_s = t, waited_s
            else:
                self.per_frame_s = (1 - SMOOTHING) * self.per_frame_s + SMOOTHING * t
                self.wait_s = (1 - SMOOTHING) * self.wait_s + SMOOTHING * waited_s


class LiveReader:
    """Reads `source` in a daemon thread into a buffer of at most `capacity` frames (see module);
    `paced`: each frame enters the buffer at its own timestamp after the first (a file read live)."""

    def __init__(self, source: FrameSource, policy: DropPolicy = "latest", capacity: int = 32, paced: bool = False):
        if policy not in DROP_POLICIES:
            raise ValueError(f"drop policy must be one of {', '.join(DROP_POLICIES)}, got {policy!r}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1 frame, got {capacity}")
        self.source, self.policy, self.capacity, self.paced = source, policy, capacity, paced
        self._clock: float | None = None  # paced: time.monotonic() at which the timestamp 0 is released
        self.counters = LiveCounters()
        self.stride = 1  # policy stride: keep every stride-th frame received
        self.window = 0  # frames of this source in the latest window (set by `live_windows`)
        self.error: BaseException | None = None  # what ended the reading, if not the source's end
        self._buffer: collections.deque[Frame] = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self._ended = False
        self._size: tuple[int, ...] | None = None  # the last frame's (height, width)
        self._stall_warned = False
        self._thread = threading.Thread(target=self._read, name=f"streamcosal-live {source.name}", daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def depth(self) -> int:
        """Frames in the buffer now."""
        return len(self._buffer)

    @property
    def finished_reading(self) -> bool:
        """The source has ended (or failed); frames may still be buffered."""
        return self._ended

    @property
    def finished(self) -> bool:
        """The source has ended (or failed) and every buffered frame was taken."""
        with self._cond:
            return self._ended and not self._buffer

    def _read(self) -> None:
        try:
            for frame in self.source:
                if self.paced and not self._released(frame.timestamp):
                    return
                frame.captured = time.time()
                self._check_size(frame)
                with self._cond:
                    if self._stop:
                        return
                    self.counters.received += 1
                    self.counters.last_captured = frame.captured
                    self._stall_warned = False
                    if self.policy == "stride" and (self.counters.received - 1) % self.stride:
                        self.counters.dropped += 1
                        continue
                    if self.policy == "all":
                        while len(self._buffer) >= self.capacity and not self._stop:
                            self._cond.wait(0.1)
                    elif len(self._buffer) >= self.capacity:
                        self._buffer.popleft()
                        self.counters.dropped += 1
                    self._buffer.append(frame)
                    self._cond.notify_all()
        except Exception as error:  # handed to the consumer through `error`
            self.error = error
            logger.warning("%s: live reading stopped: %s", self.name, error)
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()
            self.source.close()

    def _released(self, timestamp: float) -> bool:
        """Wait until the wall time since the first frame reaches `timestamp` (less the first
        frame's); False when closed meanwhile."""
        if self._clock is None:
            self._clock = time.monotonic() - timestamp
        with self._cond:
            while not self._stop:
                left = self._clock + timestamp - time.monotonic()
                if left <= 0:
                    return True
                self._cond.wait(left)
            return False

    def _check_size(self, frame: Frame) -> None:
        size = frame.image.shape[:2]
        if self._size is not None and size != self._size:
            self.source.report.warn(
                f"{self.name}: resolution changed from {self._size[1]}x{self._size[0]} to {size[1]}x{size[0]} "
                f"at frame {frame.index}; every result keeps its own frame's size (masks, boxes, overlay rescaled)")
        self._size = size

    def warn_if_stalled(self, seconds: float) -> None:
        """Warn once per stall when no frame has arrived for `seconds`."""
        if self.stalled(seconds) and not self._stall_warned and not self._ended:
            self._stall_warned = True
            last = time.strftime("%H:%M:%S", time.localtime(self.counters.last_captured))
            self.source.report.warn(
                f"{self.name}: no frame for {seconds:.0f} s (the last at {last}, frame "
                f"{self.source.report.last_good_index}); waiting for the camera, which is reconnected "
                "when its connection drops. Check the camera and the network.")

    def stalled(self, seconds: float) -> bool:
        """No frame arrived for `seconds` (after a first one)."""
        last = self.counters.last_captured
        return last is not None and time.time() - last > seconds

    def wait(self, n: int, deadline: float | None = None) -> bool:
        """Wait until n frames are buffered, the source ended, or time.monotonic() passes deadline;
        True when n frames are there."""
        with self._cond:
            while len(self._buffer) < n and not self._ended and not self._stop:
                timeout = None if deadline is None else deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    break
                self._cond.wait(0.5 if timeout is None else min(timeout, 0.5))
            return len(self._buffer) >= n

    def take(self, n: int) -> list[Frame]:
        """Up to n buffered frames, oldest first: the newest n under `latest` (the older ones are
        dropped and counted), under `stride` the oldest n of the last 2n, under `all` the oldest n."""
        with self._cond:
            keep = {"latest": n, "stride": 2 * n, "all": len(self._buffer)}[self.policy]
            if len(self._buffer) > keep:
                stale = len(self._buffer) - keep
                for _ in range(stale):
                    self._buffer.popleft()
                self.counters.dropped += stale
            frames = [self._buffer.popleft() for _ in range(min(n, len(self._buffer)))]
            self.counters.taken += len(frames)
            self._cond.notify_all()
            return frames

    def adapt(self, engine_fps: float) -> None:
        """`stride` policy: keep every k-th frame so that the engine's measured rate keeps up."""
        fps = self.source.info.fps
        if self.policy == "stride" and engine_fps > 0 and fps > 0:
            stride = max(1, math.ceil(STRIDE_HEADROOM * fps / engine_fps))
            if stride != self.stride:
                logger.info("%s: engine at %.1f frames/s, camera at %.1f: keeping every %d-th frame",
                            self.name, engine_fps, fps, stride)
                self.stride = stride

    def stop(self) -> None:
        """Stop reading, without waiting: a `wait` (the consumer's) returns at once, the thread ends at its
        next frame and closes the source (any thread may call it; `close` also waits for the thread)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop reading; the thread closes the source when its current read returns (it is not
        waited for longer than `timeout_s`: a read blocked on the network ends by its own timeout)."""
        self.stop()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.info("%s: reader still in a read after %.0f s; it closes the source when that returns",
                        self.name, timeout_s)


def live_windows(readers: Sequence[LiveReader], window: int, step: int | None = None,
                 stall_s: float = 2.0, until: float | None = None, warn_after_s: float = 30.0,
                 max_latency_s: float | None = None, stop: threading.Event | None = None,
                 waited: Callable[[], float] | None = None) -> Iterator[Window]:
    """Windows of the readers' frames, taken when the engine asks for the next one.

    One reader: windows of up to `window` frames, each with up to `step` new frames (default
    `window`; fewer overlap, the older ones then being context, emit False). Several: up to
    `window // len(readers)` new frames of each camera per window (no overlap), ordered by capture
    time; a camera with none after `stall_s` seconds is left out of that window (one that has had
    none for that long is not waited for). A camera without frames for `warn_after_s` gets a
    warning (once per stall). Ends when every reader has finished, at time.monotonic() `until`, or
    once `stop` is set (checked before each window; stopping the readers, `LiveReader.stop`, ends a wait).
    With `max_latency_s` (ignored under policy `all`) each window has `WindowSize.frames` frames
    per camera, so that its wait and processing fit in it (see the module); `waited`, when the engine is
    shared with other groups: the seconds this consumer has waited for its turns so far.
    The time between windows (the engine's) sets each `stride` reader's rate (`LiveReader.adapt`).
    """
    step = window if step is None else step
    if not 1 <= step <= window:
        raise ValueError(f"step must be in 1..window ({window}), got {step}")
    one = len(readers) == 1
    fps = [r.source.info.fps for r in readers if r.source.info.fps > 0]
    bounded = max_latency_s is not None and all(r.policy != "all" for r in readers)
    size = WindowSize(window if one else max(1, window // len(readers)), max_latency_s if bounded else None,
                      len(readers), 1 / min(fps) if fps else 0.0)
    context: collections.deque[Frame] = collections.deque(maxlen=window - 1)
    rate: float | None = None  # new frames/s the consumer processes, smoothed
    index, first = 0, True
    while (until is None or time.monotonic() < until) and not (stop is not None and stop.is_set()):
        per = size.frames
        want = per if first or not one else min(step, per)
        deadline = time.monotonic() + stall_s if until is None else min(time.monotonic() + stall_s, until)
        reading = [r for r in readers if not r.finished_reading]
        waiting = [r for r in reading if not r.stalled(stall_s)] or reading  # not for a stalled camera
        ready = [r.wait(want, deadline) for r in waiting]
        for reader in readers:
            reader.warn_if_stalled(warn_after_s)
        if one and not all(ready) and not readers[0].finished_reading:
            continue  # one camera: wait for a whole window
        taken = [r.take(want) for r in readers]
        for reader, frames in zip(readers, taken):
            reader.window = len(frames)
        new = sorted((f for frames in taken for f in frames), key=lambda f: f.captured or 0.0)
        if not new:
            if all(r.finished for r in readers):
                return
            continue
        old = list(context)[-(per - len(new)):] if one and per > len(new) else []
        frames = [*old, *new]
        yielded, before = time.monotonic(), waited() if waited is not None else 0.0
        yield Window(index=index, frames=frames, emit=[False] * len(old) + [True] * len(new))
        busy = time.monotonic() - yielded
        size.measured(len(frames), busy, waited() - before if waited is not None else 0.0)
        if busy > 0:
            rate = len(new) / busy if rate is None else (1 - SMOOTHING) * rate + SMOOTHING * len(new) / busy
            for reader in readers:
                reader.adapt(rate / len(readers))
        if one:
            context.extend(new)
        index, first = index + 1, False
