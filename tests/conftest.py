"""Shared fixtures. Real-mount tests are marked `mounts` and skip with a reason where impossible."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from time import perf_counter_ns

import pytest

from layerbench.analysis import results
from layerbench.driver import Driver
from layerbench.kernel import mountinfo, syscalls
from layerbench.plugins import default_plugins
from layerbench.run import backing
from layerbench.run.backing import BackingStore
from layerbench.run.session import open_driver

ROOT = os.geteuid() == 0

#: the small scenario most run tests take: two container counts (two cells), a copy-up, the disk used
TINY = """
name = "tiny"
description = "Two containers and a write, on a small image."
[params]
containers = [1, 2]
[image]
layers = 3
files = 20
bytes = 100000
[[image.file]]
path = "t.bin"
size = 8192
[repeat]
samples = 3
warmup = 1
[[step]]
op = "start"
count = "${containers}"
[[step]]
op = "append"
path = "t.bin"
measure = "copy_up_ns"
[[step]]
op = "usage"
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """TINY, written to this test's own `tiny.toml`."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


#: `starts(counts, samples)`: a scenario "starts" of one start step, one cell per container count
STARTS = """
name = "starts"
description = "Containers started on a three-file image, one cell per count."
[params]
n = {counts}
[image]
layers = 1
files = 3
bytes = 100
[repeat]
samples = {samples}
[[step]]
op = "start"
count = "${{n}}"
"""


@pytest.fixture
def starts(tmp_path: Path) -> Callable[[list[int], int], Path]:
    """Writes STARTS with these container counts and samples to this test's `starts.toml`, returns its path."""

    def write(counts: list[int], samples: int) -> Path:
        path = tmp_path / "starts.toml"
        path.write_text(STARTS.format(counts=counts, samples=samples))
        return path

    return write


#: an engine driver's cell (containerd's snapshotters, Podman): a start, a copy-up, a commit, the disk used
ENGINE_CELL = """
name = "s"
description = "an engine's cell"
[image]
source = "synthetic"
layers = 2
files = 8
bytes = 65536
seed = 1
[[image.file]]
path = "etc/app.conf"
size = 4096
layer = 0
[repeat]
samples = 2
warmup = 0
[[step]]
op = "start"
measure = "startup_ns"
[[step]]
op = "append"
path = "etc/app.conf"
measure = "copy_up_ns"
[[step]]
op = "commit"
measure = "commit_ns"
[[step]]
op = "usage"
"""


def slow_cell(write_bytes: int, on: str = "") -> str:
    """A cell to be killed in the middle: many samples of a start and a write of `write_bytes` (`on`: where,
    for its description). Not adaptive, so it never ends early once its figures are sure."""
    return f"""
name = "slow"
description = "Many samples of a start and a write{on}, to be killed in the middle."
[image]
layers = 2
files = 20
bytes = 100000
[repeat]
samples = 100000
warmup = 0
adaptive = false
[[step]]
op = "start"
[[step]]
op = "write"
path = "big.bin"
bytes = {write_bytes}
"""


@pytest.fixture
def engine_cell(tmp_path: Path) -> Path:
    """ENGINE_CELL, written to this test's own `s.toml`."""
    path = tmp_path / "s.toml"
    path.write_text(ENGINE_CELL)
    return path


def _leftovers_under(root: str) -> list[str]:
    mounts = mountinfo.points_below(root)
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines()
    return mounts + [line for line in loops if root in line]


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the whole suite, no mount or loop device under the tests' temp root remains."""
    root = str(tmp_path_factory.getbasetemp())
    yield
    deadline = time.monotonic() + 10  # a loop device detaches when the last mount namespace holding it ends
    while (left := _leftovers_under(root)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"left behind by the test suite: {left}"


def require(driver: str) -> None:
    """Skip unless `driver` can run here, with its own reason."""
    reason = default_plugins().driver(driver).probe()
    if reason is not None:
        pytest.skip(f"{driver}: {reason}")


@pytest.fixture(autouse=True)
def the_fast_lane_mounts_nothing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test not marked `mounts` (the `-m "not mounts"` lane, CONTRIBUTING.md) fails as soon as it
    mounts, makes a loop device or formats a store in this process."""
    if request.node.get_closest_marker("mounts") is not None:
        return

    def refuse(*args: object, **kwargs: object) -> None:
        pytest.fail(f"{request.node.nodeid} mounts or makes a store: mark it @pytest.mark.mounts", pytrace=False)

    monkeypatch.setattr(syscalls, "_mount", refuse)
    monkeypatch.setattr(syscalls, "overlay_mount", refuse)
    monkeypatch.setattr(backing, "_run", refuse)  # mkfs, losetup


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(autouse=True)
def every_saved_result_matches_the_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every results file a test writes is validated against harness/analysis/results.schema.json."""
    save = results.save

    def checked(doc: dict, path: Path) -> None:
        results.validate(doc)
        save(doc, path)

    monkeypatch.setattr(results, "save", checked)


@contextmanager
def driver_on_store(
    name: str, work: Path, size: int = 768 << 20, inodes: int = 0
) -> Iterator[tuple[Driver, BackingStore]]:
    """A fresh backing store of the driver's default kind, and the driver set up on it."""
    require(name)
    cls = default_plugins().driver(name)
    with open_driver(cls, work, cls.backings[0], size, inodes) as session:
        yield session.driver, session.store


def first_append_ns(path: Path) -> int:
    """The time of opening `path` for append, writing one byte, closing: a first write."""
    t0 = perf_counter_ns()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"x")
    os.close(fd)
    return perf_counter_ns() - t0
