"""run.timing: a benchmark's start is the `start` step's timed region, and nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from layerbench.drivers.null import NullDriver
from layerbench.images.build import build_image, files_image
from layerbench.run import steps
from layerbench.run.backing import BackingStore
from layerbench.run.timing import StartTimer

TICK_NS = 1000


class LoggedNull(NullDriver):
    """The null driver, writing each container call into `log` beside the timer's clock reads."""

    log: ClassVar[list[str]] = []

    def create_container(self, container_id: str, image: str) -> None:
        self.log.append(f"create {container_id}")
        super().create_container(container_id, image)

    def mount(self, container_id: str) -> Path:
        self.log.append(f"mount {container_id}")
        return super().mount(container_id)

    def unmount(self, container_id: str) -> None:
        self.log.append(f"unmount {container_id}")
        super().unmount(container_id)


@pytest.mark.mounts
def test_start_times_create_and_mount_and_keeps_the_container_until_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock's two reads hold the create and the mount, and the unmount comes only with
    `release`: the order of the calls, logged, not wall-clock times (CONTRIBUTING.md)."""
    log: list[str] = []
    clock = iter(range(0, 1 << 40, TICK_NS))

    def read_clock() -> int:
        log.append("clock")
        return next(clock)

    monkeypatch.setattr(LoggedNull, "log", log)
    store = BackingStore(tmp_path, "dir", 0)
    with store as mnt:
        driver = LoggedNull(mnt)
        driver.setup()
        image = files_image([()])
        timer = StartTimer(driver, image, build_image(driver, image), store, prefix="x")
        monkeypatch.setattr(steps, "perf_counter_ns", read_clock)
        first, second = timer.start(), timer.start()
        assert (first, second) == (TICK_NS, TICK_NS)  # each start is its two clock reads apart
        assert log == ["clock", "create xc0", "mount xc0", "clock", "clock", "create xc1", "mount xc1", "clock"]
        assert timer.containers == ["xc0", "xc1"] and set(driver.lineage.parent) >= {"xc0", "xc1"}
        log.clear()
        timer.release()
        assert sorted(log) == ["unmount xc0", "unmount xc1"]  # after the clock, untimed
        assert timer.containers == [] and not {"xc0", "xc1"} & set(driver.lineage.parent)
        driver.close()
