"""Prefetcher: order, exceptions at the right point, clean stop, no leaked threads."""

from __future__ import annotations

import threading
import time

import pytest

from streamcosal.run.prefetch import Prefetcher


def wait_for_threads(count: int, timeout: float = 2.0) -> int:
    deadline = time.monotonic() + timeout
    while threading.active_count() > count and time.monotonic() < deadline:
        time.sleep(0.01)
    return threading.active_count()


def test_order_is_kept_and_thread_ends():
    before = threading.active_count()
    with Prefetcher(range(100), maxsize=3) as items:
        assert list(items) == list(range(100))
    assert wait_for_threads(before) == before


def test_producer_exception_raised_after_earlier_items():
    def produce():
        yield from range(5)
        raise ValueError("frame 5 is broken")

    before = threading.active_count()
    got = []
    with pytest.raises(ValueError, match="frame 5 is broken"):
        for item in Prefetcher(produce(), maxsize=2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]
    assert wait_for_threads(before) == before


def test_close_early_stops_a_blocked_producer():
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    before = threading.active_count()
    with Prefetcher(endless(), maxsize=2) as items:
        assert next(items) == 0
        time.sleep(0.05)  # producer fills the queue and blocks
    assert wait_for_threads(before) == before
    assert len(produced) <= 4  # bounded read-ahead
    with pytest.raises(StopIteration):
        next(items)


def test_close_does_not_wait_for_a_producer_stuck_in_its_item():
    """SIGTERM during a live stream's reconnect backoff: close() returns within its bound (it
    joined without a timeout, holding the shutdown for the whole backoff)."""
    release = threading.Event()

    def reconnecting():
        yield 0
        release.wait(60)  # the source sleeping between reconnect tries
        yield 1

    before = threading.active_count()
    prefetcher = Prefetcher(reconnecting(), maxsize=2)  # close() waits 2 s at most
    assert next(prefetcher) == 0
    closing = threading.Thread(target=prefetcher.close)
    closing.start()
    closing.join(5)
    stuck = closing.is_alive()
    release.set()  # the source is closed: the producer leaves at its next item
    closing.join()
    assert not stuck
    assert wait_for_threads(before) == before


def test_keyboard_interrupt_in_consumer_stops_thread():
    before = threading.active_count()
    with pytest.raises(KeyboardInterrupt):
        with Prefetcher(iter(range(10**9)), maxsize=4) as items:
            for item in items:
                if item == 10:
                    raise KeyboardInterrupt
    assert wait_for_threads(before) == before


def test_many_prefetchers_leak_no_threads():
    before = threading.active_count()
    for _ in range(20):
        p = Prefetcher(range(50), maxsize=1)
        next(p)
        p.close()
    assert wait_for_threads(before) == before


def test_maxsize_is_checked():
    with pytest.raises(ValueError, match="maxsize"):
        Prefetcher([], maxsize=0)
