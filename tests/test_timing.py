"""run.timing: a benchmark's start is the `start` step's timed region, and nothing else."""

from __future__ import annotations

import time
from pathlib import Path

from layerbench.drivers.null import NullDriver
from layerbench.images.build import build_image, files_image
from layerbench.run.backing import BackingStore
from layerbench.run.timing import StartTimer

MOUNT_S, UNMOUNT_S = 0.005, 0.2


class SlowNull(NullDriver):
    """The null driver with a mount that costs 5 ms and an unmount that costs 200 ms."""

    def mount(self, container_id: str) -> Path:
        time.sleep(MOUNT_S)
        return super().mount(container_id)

    def unmount(self, container_id: str) -> None:
        time.sleep(UNMOUNT_S)
        super().unmount(container_id)


def test_start_times_create_and_mount_and_keeps_the_container_until_release(tmp_path: Path) -> None:
    store = BackingStore(tmp_path, "dir", 0)
    with store as mnt:
        driver = SlowNull(mnt)
        driver.setup()
        image = files_image([()])
        timer = StartTimer(driver, image, build_image(driver, image), store, prefix="x")
        first, second = timer.start(), timer.start()
        assert timer.containers == ["xc0", "xc1"] and set(driver.lineage.parent) >= {"xc0", "xc1"}
        for ns in (first, second):  # the mount is inside the clock ...
            assert MOUNT_S * 1e9 <= ns < UNMOUNT_S * 1e9  # ... the unmount is not
        t0 = time.perf_counter()
        timer.release()
        assert time.perf_counter() - t0 >= 2 * UNMOUNT_S  # both unmounted, after the clock
        assert timer.containers == [] and not {"xc0", "xc1"} & set(driver.lineage.parent)
        driver.close()
