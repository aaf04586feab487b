"""A scenario's timed `start` step outside a run, for benchmarks that set it beside a bare floor.

`StartTimer.start` runs the `start` step through `steps.run_step` itself (create_container +
mount + first readdir inside the clock), so a benchmark times exactly what `startup_ns`
times; `release` unmounts and removes the containers afterwards, untimed, as a sample's end does.
"""

from __future__ import annotations

from layerbench.driver import Driver
from layerbench.images.image import Image
from layerbench.run.backing import BackingStore, Usage
from layerbench.run.steps import SampleState, run_step
from layerbench.scenario import Step

__all__ = ["START", "StartTimer"]

#: a scenario's `[[step]] op = "start"`, one container, measured as `startup_ns`
START = Step("start", {}, "startup_ns", label="step[0] start")


def _no_outcome(label: str, what: str) -> None:
    raise AssertionError(f"{label}: a start step allows no error, yet reported {what}")


class StartTimer:
    """Timed starts of containers of `top` (the top layer of `image`, built on `driver` in `store`)."""

    def __init__(self, driver: Driver, image: Image, top: str, store: BackingStore, prefix: str = "t") -> None:
        # No usage step runs here, so the sample's disk baseline is never read: zero.
        self.state = SampleState(driver, image, top, store, Usage(0, None), 0, prefix=prefix)

    @property
    def containers(self) -> list[str]:
        """The containers started and not yet released, oldest first."""
        return list(self.state.containers)

    def start(self) -> int:
        """One timed start, in ns; the container stays mounted until `release`."""
        times: list[int] = []
        run_step(self.state, START, lambda metric, ns: times.append(ns), _no_outcome)
        (ns,) = times
        return ns

    def release(self) -> None:
        """Unmount and remove every container started so far (untimed), and let the driver settle."""
        self.state.release()
