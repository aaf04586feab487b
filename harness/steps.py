"""What each scenario step does. Timed regions hold only the operation itself.

Every op gets the sample's state and its resolved arguments; the work that
prepares an operation (paths, buffers, ids) happens before the first clock read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns
from typing import Any

from . import backing
from .driver import Driver

__all__ = ["SampleState", "OPS", "Recorder"]

Recorder = Callable[[str, int], None]


@dataclass
class SampleState:
    """What one sample has made so far; the runner removes its containers afterwards."""

    driver: Driver
    image: str
    store: backing.BackingStore
    baseline: backing.Usage
    baseline_walk: int
    prefix: str
    containers: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    roots: dict[str, Path] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        if not self.containers:
            raise RuntimeError("this step needs a container: add a 'start' step before it")
        return self.roots[self.containers[-1]]


def _start(state: SampleState, args: dict[str, Any], measure: str | None, record: Recorder) -> None:
    driver, image = state.driver, state.image
    for _ in range(args.get("count", 1)):
        cid = f"{state.prefix}c{len(state.containers)}"
        state.containers.append(cid)
        t0 = perf_counter_ns()
        driver.create_container(cid, image)
        root = driver.mount(cid)
        os.listdir(root)
        t1 = perf_counter_ns()
        state.mounted.append(cid)
        state.roots[cid] = root
        if measure:
            record(measure, t1 - t0)


def _append(state: SampleState, args: dict[str, Any], measure: str | None, record: Recorder) -> None:
    path = str(state.root / args["path"])
    data = b"x" * args.get("bytes", 1)
    flags = os.O_WRONLY | os.O_APPEND
    t0 = perf_counter_ns()
    fd = os.open(path, flags)
    os.write(fd, data)
    os.close(fd)
    t1 = perf_counter_ns()
    if measure:
        record(measure, t1 - t0)


def _read(state: SampleState, args: dict[str, Any], measure: str | None, record: Recorder) -> None:
    path = str(state.root / args["path"])
    size = os.stat(path).st_size
    buf = bytearray(min(size, 1 << 20) or 1)
    t0 = perf_counter_ns()
    fd = os.open(path, os.O_RDONLY)
    while os.readv(fd, [buf]):
        pass
    os.close(fd)
    t1 = perf_counter_ns()
    if measure:
        record(measure, t1 - t0)


def _unlink(state: SampleState, args: dict[str, Any], measure: str | None, record: Recorder) -> None:
    path = str(state.root / args["path"])
    t0 = perf_counter_ns()
    os.unlink(path)
    t1 = perf_counter_ns()
    if measure:
        record(measure, t1 - t0)


def _usage(state: SampleState, args: dict[str, Any], measure: str | None, record: Recorder) -> None:
    used = state.store.usage()
    record("disk_bytes", used.bytes - state.baseline.bytes)
    record("inodes", used.inodes - state.baseline.inodes)
    record("disk_walk_bytes", backing.allocated_bytes(state.store.mountpoint) - state.baseline_walk)


OPS: dict[str, Callable[[SampleState, dict[str, Any], str | None, Recorder], None]] = {
    "start": _start,
    "append": _append,
    "read": _read,
    "unlink": _unlink,
    "usage": _usage,
}
