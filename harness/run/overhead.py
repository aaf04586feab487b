"""The harness's own cost, measured at the start of every run and recorded with it.

`timer_ns` is the median of an empty timed region (two clock reads); the runner
subtracts it from every `_ns` sample. `null_start_ns` is what the null driver's
start costs (create_container + mount + readdir of an empty directory) after that
subtraction: the floor of `startup_ns` for any driver run through this harness.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path
from time import perf_counter_ns

from layerbench.driver import Driver

__all__ = ["measure"]


def measure(null_driver: type[Driver] | None, rounds: int = 2000) -> dict[str, int]:
    """Median ns of an empty timed region and, given the null driver, of a start through it."""
    empty = []
    for _ in range(rounds):
        t0 = perf_counter_ns()
        t1 = perf_counter_ns()
        empty.append(t1 - t0)
    timer = int(statistics.median(empty))
    out = {"timer_ns": timer, "rounds": rounds}
    if null_driver is None:
        return out
    starts = []
    with tempfile.TemporaryDirectory(prefix="layerbench-overhead-") as tmp:
        driver = null_driver(Path(tmp))
        driver.setup()
        try:
            for i in range(rounds):
                cid = f"c{i}"
                t0 = perf_counter_ns()
                driver.create_container(cid, "l0")
                root = driver.mount(cid)
                os.listdir(root)
                t1 = perf_counter_ns()
                starts.append(t1 - t0)
        finally:
            driver.close()
    out["null_start_ns"] = max(0, int(statistics.median(starts)) - timer)
    return out
