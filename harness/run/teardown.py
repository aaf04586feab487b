"""Tear a finished cell down while the next one sets up, never beside a sample.

A cell's teardown (closing its driver, unmounting, detaching the loop, removing its
store) touches only that cell's own store. `Overlap` runs it on a thread while the
main thread goes on to the next cell's set-up (mkfs, loop mount, driver set-up, image
build); the next cell calls `wait()` before its first sample, so no teardown runs
beside a timed region or a sample's untimed work. docs/performance.md shows the null
driver's timer-overhead figure with and without.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Overlap"]


class Overlap:
    """At most one teardown in flight, on a thread; `wait()` joins it and raises what it raised."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._then: Callable[[], None] | None = None

    def submit(self, teardown: Callable[[], None], then: Callable[[], None] | None = None) -> None:
        """Run `teardown` now on a thread (inline when disabled), after the one before has ended;
        `then` runs once it has ended, on the thread that waits for it (the run's own)."""
        self.wait()
        if not self.enabled:
            teardown()
            if then is not None:
                then()
            return

        def body() -> None:
            try:
                teardown()
            except BaseException as exc:  # noqa: BLE001  handed to the main thread by wait()
                self._error = exc

        self._then = then
        self._thread = threading.Thread(target=body, name="layerbench-teardown", daemon=False)
        self._thread.start()

    def wait(self) -> None:
        """Block until the teardown in flight has ended, through interrupts too; run its `then`;
        raise its error."""
        thread, interrupted = self._thread, False
        while thread is not None and thread.is_alive():
            try:
                thread.join()
            except KeyboardInterrupt:  # finish releasing first: the run's own cleanup comes after
                interrupted = True
        self._thread = None
        error, self._error = self._error, None
        then, self._then = self._then, None
        if then is not None and error is None:
            then()
        if interrupted:
            raise KeyboardInterrupt
        if error is not None:
            raise error

    @property
    def busy(self) -> bool:
        """Whether a teardown is in flight."""
        return self._thread is not None and self._thread.is_alive()
