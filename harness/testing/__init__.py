"""A pytest plugin for driver authors: fixtures, tree comparison and the conformance suite.

Registered through the ``pytest11`` entry point, so it is active wherever
layerbench is installed. Run the conformance suite on your driver with::

    pytest --pyargs layerbench.testing.conformance --layerbench-driver mine

or use the fixtures in your own tests: ``layerbench_driver`` is a set-up driver on
a fresh backing store of its default kind (closed afterwards), ``layerbench_stack``
a :class:`Stack` on it. A test module may set ``LAYERBENCH_DRIVERS = [...]`` to pick
the drivers when the option is not given.

The method is containerd's snapshotter testsuite: every change set is applied to a
plain directory and through the driver (a layer filled and sealed, or a container
mounted, changed, committed), then a fresh container's root is compared with the
plain directory: type, mode, owner, size and content, mtime of files and devices,
symlink targets, device numbers, hardlink groups and ``user.*`` xattrs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbench.driver import Driver
from layerbench.plugins import default_plugins
from layerbench.run.userns import hand_over, run_in_userns
from layerbench.testing.changes import (
    T0,
    Append,
    Chmod,
    Chown,
    File,
    Link,
    Mkdir,
    Op,
    Opaque,
    Remove,
    Rename,
    SetXattr,
    Symlink,
    apply_to_diff,
)
from layerbench.testing.sessions import default_backing, driver_session, mounts_below, userns_session
from layerbench.testing.stack import EBUSY_CONTRACT, Stack
from layerbench.testing.trees import Entry, Tree, compare, snapshot

__all__ = [
    "Entry",
    "Tree",
    "snapshot",
    "compare",
    "Op",
    "Mkdir",
    "File",
    "Append",
    "Symlink",
    "Link",
    "Remove",
    "Opaque",
    "Chown",
    "Chmod",
    "Rename",
    "SetXattr",
    "Stack",
    "apply_to_diff",
    "driver_session",
    "userns_session",
    "default_backing",
    "mounts_below",
    "EBUSY_CONTRACT",
    "T0",
]

# --- the pytest plugin -----------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("layerbench")
    group.addoption(
        "--layerbench-driver",
        action="append",
        default=[],
        metavar="NAME",
        help="run the layerbench conformance suite (and fixtures) on driver NAME; repeatable",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "conformance: a case of the layerbench driver conformance suite")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "layerbench_driver_name" not in metafunc.fixturenames:
        return
    names = metafunc.config.getoption("layerbench_driver") or list(getattr(metafunc.module, "LAYERBENCH_DRIVERS", ()))
    metafunc.parametrize("layerbench_driver_name", names or [None], ids=[str(n) for n in names] or ["no-driver"])


@pytest.fixture
def layerbench_driver_name() -> str:
    pytest.skip("pass --layerbench-driver NAME")


@pytest.fixture
def layerbench_driver_class(layerbench_driver_name: str | None) -> type[Driver]:
    """The driver class by name; the test skips with the driver's probe reason."""
    if layerbench_driver_name is None:
        pytest.skip("no driver chosen: pass --layerbench-driver NAME")
    plugins = default_plugins()
    if layerbench_driver_name not in plugins.registry.drivers:
        broken = "; ".join(plugins.broken.values())  # each message names its plugin
        pytest.fail(
            f"no driver {layerbench_driver_name!r} is installed" + (f" (broken plugins: {broken})" if broken else "")
        )
    cls = plugins.driver(layerbench_driver_name)
    if (reason := cls.probe()) is not None:
        pytest.skip(f"{cls.name}: {reason}")
    return cls


@pytest.fixture
def layerbench_driver(layerbench_driver_class: type[Driver], tmp_path: Path) -> Iterator[Driver]:
    """The driver set up on a fresh backing store of its default kind; closed afterwards.

    A `userns` driver is set up, used and closed by the test inside an unprivileged
    user namespace (see `pytest_pyfunc_call`); closed here again after it.
    """
    session = userns_session if layerbench_driver_class.userns else driver_session
    with session(layerbench_driver_class, tmp_path / "store") as driver:
        yield driver
    left = mounts_below(tmp_path / "store" / "mnt" / layerbench_driver_class.name)
    assert not left, f"driver {layerbench_driver_class.name}: close() left mounts: {left}"


@pytest.fixture
def layerbench_stack(layerbench_driver: Driver, tmp_path: Path) -> Stack:
    """A :class:`Stack` on `layerbench_driver`, its reference tree under `tmp_path`."""
    stack = Stack(layerbench_driver, tmp_path / "ref")
    if layerbench_driver.userns:
        hand_over(stack.ref)
    return stack


def _in_userns(test: object, args: dict[str, object], driver: Driver) -> None:
    """The test body as the namespace runs it: set up, test, close, nothing left mounted."""
    driver.setup()
    try:
        test(**args)  # type: ignore[operator]
    finally:
        driver.close()
    left = mounts_below(driver.home)
    assert not left, f"driver {driver.name}: close() left mounts in its namespace: {left}"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a test of a `userns` driver inside an unprivileged user namespace (a forked child)."""
    driver = pyfuncitem.funcargs.get("layerbench_driver")
    if not isinstance(driver, Driver) or not driver.userns:
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    expose = [driver.home.parent]
    stack = pyfuncitem.funcargs.get("layerbench_stack")
    if isinstance(stack, Stack):
        expose.append(stack.ref)
    run_in_userns(_in_userns, pyfuncitem.obj, args, driver, expose=expose, timeout_s=600)
    return True
