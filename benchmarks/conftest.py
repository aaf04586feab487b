"""Fixtures for the graphtest-style micro-benchmarks (`pytest benchmarks/ --benchmark-only`).

Every driver that is installed runs, each on a fresh backing store of its default
kind; one that cannot run here skips with its probe's reason. `--layerbench-driver
NAME` (from the layerbench pytest plugin) restricts them to NAME.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbench.driver import Driver
from layerbench.plugins import default_plugins
from layerbench.testing import driver_session


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bench_driver_name" in metafunc.fixturenames:
        names = metafunc.config.getoption("layerbench_driver") or sorted(default_plugins().registry.drivers)
        metafunc.parametrize("bench_driver_name", names)


@pytest.fixture
def bench_driver(bench_driver_name: str, tmp_path: Path) -> Iterator[Driver]:
    """The driver on a fresh store; skipped with its probe's reason where it cannot run."""
    cls = default_plugins().driver(bench_driver_name)
    if (reason := cls.probe()) is not None:
        pytest.skip(f"{cls.name}: {reason}")
    with driver_session(cls, tmp_path / "store", size_bytes=1 << 30) as driver:
        yield driver
