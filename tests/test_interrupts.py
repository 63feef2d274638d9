"""Stop signals are held while a frame's outputs are written, raised at once elsewhere."""

import os
import signal

import pytest

from streamcosal.run.interrupts import Terminated, atomic, stop_signals


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """Python's own SIGINT handler, as an interactive run has: a test runner started in the background
    ignores SIGINT, and stop_signals() then rightly leaves it ignored (the last test)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize(("signum", "stop"), [(signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)])
def test_signal_inside_atomic_waits_for_the_block(signum, stop):
    done = []
    with stop_signals():
        with pytest.raises(stop):
            with atomic():
                with atomic():  # nested: held until the outermost block ends
                    os.kill(os.getpid(), signum)
                    done.append("inner")
                done.append("outer")
        assert done == ["inner", "outer"]


@pytest.mark.parametrize(("signum", "stop"), [(signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)])
def test_signal_outside_atomic_stops_at_once(signum, stop):
    done = []
    with stop_signals():
        with pytest.raises(stop):
            os.kill(os.getpid(), signum)
            done.append("after")
        with atomic():  # nothing pending from before
            done.append("next block")
    assert done == ["next block"]


def test_handlers_restored_and_second_sigterm_ignored():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with stop_signals():
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # the cleanup is not cut by a second one
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_held_stop_wins_over_an_error_of_the_block():
    with stop_signals():
        with pytest.raises(Terminated) as stop:
            with atomic():
                os.kill(os.getpid(), signal.SIGTERM)
                raise OSError(28, "No space left on device")
        assert isinstance(stop.value.__context__, OSError)  # the error is kept as its context
        with atomic():  # nothing left pending to go off later
            pass


def test_an_ignored_sigint_stays_ignored():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a process started in the background
    with stop_signals():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)  # ignored: no KeyboardInterrupt
        with atomic():
            pass
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
