"""Event delivery beside the run: each target (a webhook, an MQTT broker) gets its own thread and a
bounded queue, so an endpoint that is down, hangs or refuses the login neither stops nor slows the run.

    delivery = Delivery.from_params(params)             # --webhook/--mqtt; None when neither is given
    report = run_pipeline(sources, out, engine, observers=[delivery])   # (run_pipeline does this itself)
    report.deliveries                                   # per target: delivered, and what was not, with why

The retry policy (`DeliveryPolicy`): each try has ``timeout_s`` (connect and answer); a try that failed on
something that may pass (a timeout, a refused connection, HTTP 5xx, 408, 425, 429, a lost broker) is
repeated up to ``attempts`` tries in all, waiting ``backoff_s``, then twice as long each time (at most
``max_backoff_s``); a refused login stops the deliveries to that target for the run, another refusal
(HTTP 400, 404, 413...) fails the event at once. A target whose queue is full (``queue_size`` events
waiting) fails the new events at once. When the run ends, the targets get ``drain_s`` more seconds to
deliver what waits (said in the log; Ctrl-C ends the wait at once); what is then still undelivered is
listed in the report with the reason (the last error) and printed at the end of ``streamcosal video``.
Undelivered events do not change the exit code: the results are saved, and the report says what did
not arrive.

Delivery is at least once: a receiver that answers after the timeout gets the event again on the next
try; every try of an event carries the same ``id`` (``EventRecord.id``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamcosal.io.redact import redact
from streamcosal.run.delivery.mqtt import MqttTarget
from streamcosal.run.delivery.payload import event_payload
from streamcosal.run.delivery.target import DeliveryError, Target
from streamcosal.run.delivery.webhook import WebhookTarget
from streamcosal.run.observers import EventRecord, FrameRecord, Observer
from streamcosal.run.records import DeliveryOutcome, UndeliveredEvent

if TYPE_CHECKING:
    from streamcosal.params import RunParams
    from streamcosal.run.records import RunReport

logger = logging.getLogger(__name__)

POLL_S = 0.05  # a worker with nothing queued looks this often whether the run has ended


@dataclass(frozen=True)
class DeliveryPolicy:
    """Timeouts, retries and bounds of the deliveries (see the module). Seconds."""

    timeout_s: float = 5.0
    attempts: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    queue_size: int = 256
    drain_s: float = 10.0


class _Pending:
    """An event and its JSON, made once (by the first target's thread that needs it) for every target."""

    def __init__(self, event: EventRecord, snapshot: bool, clip: bool) -> None:
        self.event, self._snapshot, self._clip = event, snapshot, clip
        self._body: bytes | None = None
        self._lock = threading.Lock()

    def body(self) -> bytes:
        with self._lock:
            if self._body is None:
                self._body = event_payload(self.event, self._snapshot, self._clip)
            return self._body


class _Worker:
    """One target's thread and queue; its `outcome` is final once `finish` returns."""

    def __init__(self, target: Target, policy: DeliveryPolicy) -> None:
        self.target, self.policy = target, policy
        self.outcome = DeliveryOutcome(target.name)
        self._queue: queue.Queue[_Pending] = queue.Queue(policy.queue_size)
        self._lock = threading.Lock()
        self._current: _Pending | None = None
        self._last_error: str | None = None
        self._closed = False  # finish() has made the outcome: later results are not counted
        self._warned = False  # the first event not delivered is a warning, the next ones (until one is) info
        self._draining = threading.Event()  # the run ended: deliver what waits, then stop
        self._ended = threading.Event()  # the drain time is over: stop trying
        self._thread = threading.Thread(target=self._run, name=f"streamcosal-delivery {target.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, pending: _Pending) -> None:
        """Queue an event; a full queue fails it at once."""
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            self._undelivered(pending.event, f"the delivery queue was full ({self.policy.queue_size} events waiting: "
                                             "the endpoint is slower than the events)")

    def busy(self) -> bool:
        """Whether an event is being sent or waits to be."""
        with self._lock:
            return self._current is not None or not self._queue.empty()

    def finish(self, deadline: float) -> DeliveryOutcome:
        """Let the thread deliver what waits until ``time.monotonic()`` reaches ``deadline``; then list what is left
        as undelivered (the thread, if still in a try, is left to end by its timeout)."""
        self._draining.set()
        if self._thread.is_alive():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self._ended.set()
        with self._lock:
            self._closed = True
            left = [self._current] if self._current is not None else []
            while not self._queue.empty():
                left.append(self._queue.get_nowait())
            why = self._last_error or "still being sent"
            for pending in left:
                self._record(pending.event, f"not delivered when the run ended ({why})")
        self.target.close()
        return self.outcome

    def _run(self) -> None:
        try:
            self.target.open(self.policy.timeout_s)
        except DeliveryError as error:
            self._last_error = error.reason
            logger.warning("%s: %s; %s", self.target.name, error.reason,
                           "no event will be sent there in this run" if error.refused else "trying again at each event")
        while not self._ended.is_set():
            try:
                pending = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                if self._draining.is_set():
                    return
                continue
            with self._lock:
                self._current = pending
            self._deliver(pending)
            with self._lock:
                self._current = None

    def _deliver(self, pending: _Pending) -> None:
        policy, delay = self.policy, self.policy.backoff_s
        for attempt in range(1, policy.attempts + 1):
            try:
                self.target.send(pending.event, pending.body(), policy.timeout_s)
            except DeliveryError as error:
                self._last_error = error.reason
                if not error.retry:
                    self._undelivered(pending.event, error.reason)
                    return
                if attempt == policy.attempts:
                    self._undelivered(pending.event, f"{error.reason} (after {attempt} tries)")
                    return
                if self._ended.wait(delay):
                    return  # the run ended: finish() lists it
                delay = min(2 * delay, policy.max_backoff_s)
            except Exception as error:  # the payload could not be made: no try will help
                self._undelivered(pending.event, f"{type(error).__name__}: {redact(str(error))}")
                logger.error("%s: event %s could not be prepared", self.target.name, pending.event.id, exc_info=error)
                return
            else:
                with self._lock:
                    if not self._closed:
                        self.outcome.delivered += 1
                if self._last_error is not None:
                    logger.info("%s: delivering again (event %s)", self.target.name, pending.event.id)
                    self._last_error, self._warned = None, False
                return

    def _undelivered(self, event: EventRecord, reason: str) -> None:
        with self._lock:
            if self._closed:
                return
            self._record(event, reason)
            warned, self._warned = self._warned, True
        logger.log(logging.INFO if warned else logging.WARNING, "%s: event %s not delivered: %s%s", self.target.name,
                   event.id, reason, "" if warned else " (the next ones not delivered are listed in the run report)")

    def _record(self, event: EventRecord, reason: str) -> None:
        self.outcome.undelivered.append(UndeliveredEvent(event.id, redact(event.source), event.group,
                                                         event.event.start_time, reason))


class Delivery(Observer):
    """Delivers every final event to ``targets`` (see the module); ``snapshots``: with the peak frame's JPEG,
    ``clips``: with an MP4 of the event's frames."""

    def __init__(self, targets: Sequence[Target], policy: DeliveryPolicy = DeliveryPolicy(), snapshots: bool = True,
                 clips: bool = False) -> None:
        self.policy, self.snapshots, self.wants_clips = policy, snapshots, clips
        self.workers = [_Worker(target, policy) for target in targets]
        self._started = False

    @classmethod
    def from_params(cls, params: RunParams, policy: DeliveryPolicy = DeliveryPolicy()) -> Delivery | None:
        """The deliveries ``params`` ask for (``webhook``, ``mqtt``, ``event_snapshots``, ``event_clips``); None
        when none. Raises ValueError for a URL that is not a webhook's or a broker's (password redacted)."""
        targets: list[Target] = [WebhookTarget(url) for url in params.webhook]
        targets += [MqttTarget(url) for url in params.mqtt]
        return cls(targets, policy, params.event_snapshots, params.event_clips) if targets else None

    def on_frame(self, frame: FrameRecord) -> None:
        """The first frame starts the threads (a broker is connected then): a run refused before it leaves none."""
        if not self._started:
            self._started = True
            for worker in self.workers:
                worker.start()

    def on_event(self, event: EventRecord) -> None:
        pending = _Pending(event, self.snapshots, self.wants_clips)
        for worker in self.workers:
            worker.put(pending)

    def on_end(self, report: RunReport) -> None:
        deadline = time.monotonic() + self.policy.drain_s
        if any(worker.busy() for worker in self.workers):
            logger.warning("delivering the events still waiting: up to %g s more (Ctrl-C stops waiting; what is "
                           "left is listed as not delivered)", self.policy.drain_s)
        for worker in self.workers:
            try:
                report.deliveries.append(worker.finish(deadline))
            except KeyboardInterrupt:  # a Ctrl-C while waiting: no more waiting, the run's report is still saved
                deadline = time.monotonic()
                report.deliveries.append(worker.finish(deadline))
