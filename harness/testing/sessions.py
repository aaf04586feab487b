"""A driver set up on a fresh backing store, closed afterwards; pytest-free."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from layerbench.driver import Driver
from layerbench.kernel import mountinfo
from layerbench.run.backing import BackingStore
from layerbench.run.session import DriverSession, open_driver
from layerbench.run.userns import hand_over, in_initial_userns

__all__ = ["mounts_below", "default_backing", "driver_session", "userns_session"]

_MiB = 1 << 20


def mounts_below(root: Path) -> list[str]:
    """Mount points at or below `root`."""
    return mountinfo.points_below(str(root))


def default_backing(cls: type[Driver]) -> str:
    """The first backing the driver lists that this machine can make (as the runner picks)."""
    from layerbench.run.backing import unavailable

    return next((fs for fs in cls.backings if unavailable(fs) is None), cls.backings[0])


@contextmanager
def driver_session(cls: type[Driver], workdir: Path, size_bytes: int = 512 * _MiB) -> Iterator[Driver]:
    """A driver set up on a fresh backing store under `workdir`; closed and released after.

    A driver that runs in a user namespace (`userns`) is skipped here: its calls must
    come from inside one (use the `layerbench_driver` fixture, or `userns_session`).
    """
    if cls.userns and in_initial_userns():
        import pytest  # only here: the module is pytest-free otherwise

        pytest.skip(f"{cls.name} runs inside a user namespace; the layerbench_driver fixture runs tests there")
    with open_driver(cls, workdir, default_backing(cls), size_bytes) as session:
        yield session.driver


@contextmanager
def userns_session(cls: type[Driver], workdir: Path, size_bytes: int = 512 * _MiB) -> Iterator[Driver]:
    """A `userns` driver's fresh store, handed to the unprivileged user; not set up.

    Call `setup` and everything else inside :func:`~layerbench.run.userns.run_in_userns`
    (exposing the store's mount point); `close` here, after it, removes what is left.
    """
    session = DriverSession(cls, BackingStore(workdir, default_backing(cls), size_bytes))
    try:
        session.open_store()
        hand_over(session.store.mountpoint)
        yield session.start(setup=False)
    finally:
        session.close()
