"""A driver on a fresh backing store: the one way a driver is opened to be used.

A run's cells and template builds, the testing sessions, the tests and the benchmarks
all open a driver the same way: a store made under a work directory, the driver's
home `<mount point>/<driver name>` on it (made 0700, unless the store is a template's
copy that has it already), the driver made there with the run's ledger and set up;
`close` closes the driver and releases the store, after errors too.

`open_driver` is the context manager for all of that at once; a cell uses a
`DriverSession`'s steps one by one (it opens the store under its time limit, sets the
driver up in a user namespace for a rootless driver, and releases it all on its
teardown thread).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from layerbench.driver import Driver
from layerbench.kernel import safety, syscalls
from layerbench.run.backing import BackingStore
from layerbench.run.ledger import Ledger

__all__ = ["DriverSession", "open_driver"]


class DriverSession:
    """A driver class and the fresh store it is opened on; `close` releases both, and the store's
    work directory too when the session made it (`own_workdir`)."""

    def __init__(self, cls: type[Driver], store: BackingStore, own_workdir: bool = False) -> None:
        self.cls = cls
        self.store = store
        self.own_workdir = own_workdir
        self._driver: Driver | None = None

    @classmethod
    def new(
        cls,
        driver: type[Driver],
        workdir: Path,
        fstype: str,
        size_bytes: int,
        inodes: int = 0,
        *,
        ledger: Ledger | None = None,
        template: Path | None = None,
        loop_io: str = "direct",
        own_workdir: bool = False,
    ) -> DriverSession:
        """A session on a new `fstype` store under `workdir` (a copy of the backing file `template`, if
        given), not yet opened. With `own_workdir`, `workdir` is made now (in the ledger; never through
        a symlink) and `close` removes it."""
        if own_workdir:
            if ledger is not None:
                ledger.made("dir", workdir)
            safety.make_dir(workdir)
        store = BackingStore(workdir, fstype, size_bytes, inodes, ledger, template, loop_io=loop_io)
        return cls(driver, store, own_workdir)

    @property
    def home(self) -> Path:
        """The driver's home on the store (an engine driver's name has a slash: containerd/native)."""
        return self.store.mountpoint / self.cls.name

    @property
    def driver(self) -> Driver:
        """The driver `start` made."""
        if self._driver is None:
            raise RuntimeError(f"driver {self.cls.name}: not started on its store")
        return self._driver

    def open_store(self) -> Path:
        """Make the store and, on a new one, the driver's home; return the home."""
        self.store.open()
        if self.store.template is None:  # a template's copy has the home its build made
            self.home.mkdir(mode=0o700, parents=True)
        return self.home

    def start(self, setup: bool = True) -> Driver:
        """Make the driver in its home with the store's ledger and (unless not `setup`) set it up."""
        driver = self.cls(self.home)
        driver.ledger = self.store.ledger
        self._driver = driver  # closed by `close` even when its set-up fails
        if setup:
            driver.setup()
        return driver

    def forget_driver(self) -> None:
        """Leave the driver open on its store (a template's build lets it go, harness/run/templates.py)."""
        self._driver = None

    def close_driver(self) -> None:
        """Close the driver, if one was made; the store stays."""
        driver, self._driver = self._driver, None
        if driver is not None:
            driver.close()

    def close(self, keep_file: bool = False, unmount_home: bool = False) -> None:
        """Close the driver and release the store (keeping its backing file with `keep_file`) and an own
        work directory. With `unmount_home`, whatever is still mounted in the driver's home (what a failed
        sample left) is unmounted before the driver closes."""
        try:
            if unmount_home:
                syscalls.unmount_below(str(self.home))
            self.close_driver()
        finally:
            self.store.close(keep_file=keep_file)
            if self.own_workdir:
                safety.remove_tree(self.store.workdir)
                if self.store.ledger is not None:
                    self.store.ledger.released("dir", self.store.workdir)


@contextmanager
def open_driver(
    cls: type[Driver],
    workdir: Path,
    fstype: str,
    size_bytes: int,
    inodes: int = 0,
    *,
    ledger: Ledger | None = None,
    template: Path | None = None,
    loop_io: str = "direct",
    setup: bool = True,
) -> Iterator[DriverSession]:
    """`cls` opened on a fresh `fstype` store under `workdir` (a copy of the backing file `template`, if
    given) and set up (unless not `setup`); closed and the store released on leaving."""
    session = DriverSession.new(
        cls, workdir, fstype, size_bytes, inodes, ledger=ledger, template=template, loop_io=loop_io
    )
    try:
        session.open_store()
        session.start(setup)
        yield session
    finally:
        session.close()
