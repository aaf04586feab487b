"""Overlap: a cell's teardown runs beside the next set-up, and is over before the next sample."""

from __future__ import annotations

import threading
import time

import pytest

from layerbench.run.teardown import Overlap


def test_teardown_runs_on_another_thread_and_wait_joins_it() -> None:
    overlap, ran_on, release = Overlap(), [], threading.Event()

    def teardown() -> None:
        release.wait(5)
        ran_on.append(threading.current_thread().name)

    overlap.submit(teardown)
    assert overlap.busy  # the caller got control back while the teardown still runs
    release.set()
    overlap.wait()
    assert not overlap.busy
    assert ran_on == ["layerbench-teardown"]


def test_a_second_submit_waits_for_the_first() -> None:
    overlap, order = Overlap(), []

    def slow() -> None:
        time.sleep(0.05)
        order.append("first")

    overlap.submit(slow)
    overlap.submit(lambda: order.append("second"))
    overlap.wait()
    assert order == ["first", "second"]


def test_an_error_in_the_teardown_reaches_the_caller_once() -> None:
    overlap = Overlap()

    def broken() -> None:
        raise OSError("umount: target is busy")

    overlap.submit(broken)
    with pytest.raises(OSError, match="busy"):
        overlap.wait()
    overlap.wait()  # reported once: the next wait has nothing to say


def test_disabled_runs_inline() -> None:
    overlap, ran_on = Overlap(enabled=False), []
    overlap.submit(lambda: ran_on.append(threading.current_thread().name))
    assert ran_on == [threading.current_thread().name]
    assert not overlap.busy


@pytest.mark.parametrize("enabled", [True, False])
def test_then_runs_on_the_waiting_thread_after_the_teardown_ended(enabled: bool) -> None:
    overlap, order = Overlap(enabled), []

    def teardown() -> None:
        time.sleep(0.02)
        order.append("teardown")

    overlap.submit(teardown, then=lambda: order.append(f"then on {threading.current_thread().name}"))
    overlap.wait()
    overlap.wait()  # once only
    assert order == ["teardown", f"then on {threading.current_thread().name}"]


def test_then_is_skipped_when_the_teardown_failed() -> None:
    overlap, told = Overlap(), []

    def broken() -> None:
        raise OSError("umount: target is busy")

    overlap.submit(broken, then=lambda: told.append("finished"))
    with pytest.raises(OSError):
        overlap.wait()
    assert told == []
