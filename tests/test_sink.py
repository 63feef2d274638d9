"""The sink thread: windows written in order beside the caller, errors raised in the caller, nothing
handed over lost when the caller stops."""

from __future__ import annotations

import threading
import time

import pytest

from streamcosal.run.sink import SinkThread


class SlowSink:
    """Records the windows it is given, taking ``seconds`` for each; fails on window ``fail_at``."""

    def __init__(self, seconds: float = 0.0, fail_at: int | None = None) -> None:
        self.seconds, self.fail_at = seconds, fail_at
        self.written: list[int] = []
        self.threads: set[str] = set()

    def write(self, group: str, window: int, prediction: object, owner: object) -> None:
        time.sleep(self.seconds)
        if window == self.fail_at:
            raise OSError(28, "No space left on device")
        self.written.append(window)
        self.threads.add(threading.current_thread().name)


def test_windows_are_written_in_order_in_another_thread() -> None:
    sink = SlowSink(0.01)
    with SinkThread(sink) as write:  # type: ignore[arg-type]
        for window in range(20):
            write("g", window, None, {})
    assert sink.written == list(range(20))
    assert sink.threads == {"streamcosal-sink"}


def test_the_caller_runs_ahead_by_at_most_maxsize_windows() -> None:
    sink = SlowSink(0.05)
    with SinkThread(sink, maxsize=2) as write:  # type: ignore[arg-type]
        start = time.monotonic()
        for window in range(6):
            write("g", window, None, {})
        handed_over, written_then = time.monotonic() - start, len(sink.written)
    # 6 windows of 50 ms: the caller waits for the first 3 (then 2 are queued and 1 is being written)
    assert handed_over >= 0.1 and written_then < 6
    assert sink.written == list(range(6))


def test_an_error_of_the_thread_is_raised_at_the_next_write_and_later_windows_are_dropped() -> None:
    sink = SlowSink(fail_at=2)
    with pytest.raises(OSError, match="No space left"):
        with SinkThread(sink) as write:  # type: ignore[arg-type]
            for window in range(50):
                write("g", window, None, {})
                time.sleep(0.005)
    assert sink.written == [0, 1]


def test_an_error_of_the_last_window_is_raised_on_leaving() -> None:
    sink = SlowSink(fail_at=1)
    with pytest.raises(OSError, match="No space left"):
        with SinkThread(sink) as write:  # type: ignore[arg-type]
            write("g", 0, None, {})
            write("g", 1, None, {})
    assert sink.written == [0]


def test_ctrl_c_in_the_caller_still_writes_every_window_handed_over() -> None:
    sink = SlowSink(0.05)
    with pytest.raises(KeyboardInterrupt):
        with SinkThread(sink) as write:  # type: ignore[arg-type]
            for window in range(4):
                write("g", window, None, {})
            raise KeyboardInterrupt
    assert sink.written == [0, 1, 2, 3]
