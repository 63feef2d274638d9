"""Stopping a run by Ctrl-C (SIGINT) or SIGTERM without leaving half-written results.

    with stop_signals():          # the run: SIGINT raises KeyboardInterrupt, SIGTERM `Terminated`
        ...
        with atomic():            # one frame's row and overlay frame: a signal waits for its end
            ...

A signal arriving inside `atomic()` is held and raised when the outermost `atomic()` block ends,
so a frame's result row and its overlay frame are written together or not at all. Outside
`atomic()` it is raised at once, as Python does. A second SIGTERM is ignored so the cleanup can
finish. Both work only in the main thread (where Python runs signal handlers); elsewhere
`stop_signals` leaves the handlers alone and `atomic` does nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class Terminated(BaseException):
    """SIGTERM arrived; raised in the main thread so the run stops the way Ctrl-C stops it."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run, after the run kept everything it had done: ``report`` says what that was.
    Raised once the run has saved, so a caller that does not catch it stops as Ctrl-C stops any program
    (a test session too); the command line catches it and exits 130."""

    def __init__(self, report: object) -> None:
        super().__init__("stopped by Ctrl-C: the results done so far are kept")
        self.report = report


_depth = 0  # how many atomic() blocks the main thread is inside
_pending: BaseException | None = None  # the stop held until the outermost atomic() ends


def _stop(stop: BaseException) -> None:
    global _pending
    if _depth:
        _pending = _pending or stop
    else:
        raise stop


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _stop(KeyboardInterrupt())


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _stop(Terminated())


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """While inside, SIGINT raises KeyboardInterrupt and SIGTERM raises `Terminated`, each held
    back while an `atomic()` block runs. The previous handlers come back on leaving."""
    global _pending
    if not _in_main_thread():
        yield
        return
    # SIGINT only where Python's own handler is set (a process started in the background ignores it)
    sigint = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    previous = signal.signal(signal.SIGINT, _on_sigint) if sigint else None, signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        if sigint:
            signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
        _pending = None


@contextlib.contextmanager
def atomic() -> Iterator[None]:
    """A block a stop signal does not cut in two: one held until the block ends is raised then,
    also when the block raised an error of its own (the stop wins; the error is its context)."""
    global _depth, _pending
    if not _in_main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending is not None:
            stop, _pending = _pending, None
            raise stop
