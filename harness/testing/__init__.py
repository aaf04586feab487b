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

import errno
import hashlib
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest

from layerbench.driver import Driver, LayerFormat
from layerbench.images.layer_tar import OPAQUE_XATTR, make_whiteout, set_opaque
from layerbench.kernel import mountinfo
from layerbench.kernel.treecopy import copy_tree
from layerbench.plugins import default_plugins
from layerbench.run.backing import BackingStore
from layerbench.run.userns import hand_over, in_initial_userns, run_in_userns

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
    "driver_session",
    "mounts_below",
    "EBUSY_CONTRACT",
    "T0",
]

#: A fixed mtime (whole seconds) for everything the change sets create.
T0 = 1_600_000_000
#: What a driver raises when asked to remove a layer that has children.
EBUSY_CONTRACT = "remove() of a layer with children raises OSError with errno EBUSY"
_MiB = 1 << 20


# --- trees -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """What the suite compares of one path."""

    mode: int
    uid: int
    gid: int
    size: int | None  # regular files only
    digest: str | None  # sha256 of a regular file's bytes
    target: str | None  # a symlink's target
    rdev: int | None  # device nodes
    mtime_ns: int | None  # non-directories
    xattrs: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Tree:
    """Every path under a root ("." is the root) and its hardlink groups."""

    entries: dict[str, Entry]
    links: frozenset[frozenset[str]]


def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = [n for n in os.listxattr(path, follow_symlinks=False) if n.startswith("user.")]
        return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in names))
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM, errno.ENODATA):
            return ()
        raise


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_MiB):
            h.update(chunk)
    return h.hexdigest()


def snapshot(root: Path) -> Tree:
    """Read the tree under `root` without following symlinks or crossing into other mounts."""
    entries: dict[str, Entry] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    stack = ["."]
    while stack:
        rel = stack.pop()
        full = os.path.normpath(os.path.join(root, rel))
        st = os.lstat(full)
        kind = stat.S_IFMT(st.st_mode)
        entries[rel] = Entry(
            mode=st.st_mode,
            uid=st.st_uid,
            gid=st.st_gid,
            size=st.st_size if kind == stat.S_IFREG else None,
            digest=_digest(full) if kind == stat.S_IFREG else None,
            target=os.readlink(full) if kind == stat.S_IFLNK else None,
            rdev=st.st_rdev if kind in (stat.S_IFCHR, stat.S_IFBLK) else None,
            # Directory mtimes move with every whiteout and copy-up; a symlink's mtime is not
            # kept by every copy-up (fuse-overlayfs resets it on chown), so neither is compared.
            mtime_ns=None if kind in (stat.S_IFDIR, stat.S_IFLNK) else st.st_mtime_ns,
            xattrs=_xattrs(full),
        )
        if kind == stat.S_IFDIR:
            stack.extend(os.path.join(rel, n) if rel != "." else n for n in os.listdir(full))
        else:
            inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
    links = frozenset(frozenset(paths) for paths in inodes.values() if len(paths) > 1)
    return Tree(entries=entries, links=links)


def _describe(e: Entry) -> str:
    parts = [f"{stat.filemode(e.mode)} {e.uid}:{e.gid}"]
    if e.size is not None:
        parts.append(f"{e.size} bytes sha256 {e.digest and e.digest[:12]}")
    if e.target is not None:
        parts.append(f"-> {e.target}")
    if e.rdev is not None:
        parts.append(f"rdev {os.major(e.rdev)}/{os.minor(e.rdev)}")
    if e.mtime_ns is not None:
        parts.append(f"mtime_ns {e.mtime_ns}")
    if e.xattrs:
        parts.append(f"xattrs {dict(e.xattrs)}")
    return " ".join(parts)


def compare(expected: Tree, actual: Tree) -> list[str]:
    """Differences between two trees, one line each; empty when they are equal."""
    out: list[str] = []
    for path in sorted(expected.entries.keys() - actual.entries.keys()):
        out.append(f"missing {path}: {_describe(expected.entries[path])}")
    for path in sorted(actual.entries.keys() - expected.entries.keys()):
        out.append(f"unexpected {path}: {_describe(actual.entries[path])}")
    for path in sorted(expected.entries.keys() & actual.entries.keys()):
        e, a = expected.entries[path], actual.entries[path]
        if e != a:
            out.append(f"differs {path}: expected {_describe(e)}; got {_describe(a)}")
    if expected.links != actual.links:
        show = lambda links: sorted(sorted(g) for g in links)  # noqa: E731
        out.append(f"hardlink groups: expected {show(expected.links)}; got {show(actual.links)}")
    return out


# --- change sets -----------------------------------------------------------------------


class Op(Protocol):
    """One change. `apply` does it to a plain tree (or a mounted container's root)."""

    @property
    def path(self) -> str:
        """Where the change lands, relative to the root."""

    def apply(self, root: Path) -> str | None:
        """Make the change under `root`; return a note when it needed a fallback."""


def _rm(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _attrs(path: Path, mode: int | None, uid: int, gid: int, mtime: int | None = None) -> None:
    os.lchown(path, uid, gid)  # before chmod: chown clears setuid/setgid
    if mode is not None:
        os.chmod(path, mode)
    if mtime is not None:
        os.utime(path, ns=(mtime * 10**9, mtime * 10**9), follow_symlinks=False)


@dataclass(frozen=True)
class Mkdir:
    """A directory; over an existing one only its attributes change (OCI merge)."""

    path: str
    mode: int = 0o755
    uid: int = 0
    gid: int = 0

    def apply(self, root: Path) -> str | None:
        p = root / self.path
        if os.path.lexists(p) and not (p.is_dir() and not p.is_symlink()):
            _rm(p)
        if not p.exists():
            os.mkdir(p)
        _attrs(p, self.mode, self.uid, self.gid)
        return None


@dataclass(frozen=True)
class File:
    """A regular file replacing whatever was at `path`."""

    path: str
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = T0

    def apply(self, root: Path) -> str | None:
        p = root / self.path
        _rm(p)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, self.data)
        finally:
            os.close(fd)
        _attrs(p, self.mode, self.uid, self.gid, self.mtime)
        return None


@dataclass(frozen=True)
class Append:
    """Append to an existing file in place (a copy-up on a union driver), then set its mtime."""

    path: str
    data: bytes
    mtime: int = T0 + 1

    def apply(self, root: Path) -> str | None:
        p = root / self.path
        fd = os.open(p, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, self.data)
        finally:
            os.close(fd)
        os.utime(p, ns=(self.mtime * 10**9, self.mtime * 10**9))
        return None


@dataclass(frozen=True)
class Symlink:
    path: str
    target: str
    uid: int = 0
    gid: int = 0
    mtime: int = T0

    def apply(self, root: Path) -> str | None:
        p = root / self.path
        _rm(p)
        os.symlink(self.target, p)
        _attrs(p, None, self.uid, self.gid, self.mtime)
        return None


@dataclass(frozen=True)
class Link:
    """A hardlink at `path` to the existing file `target`."""

    path: str
    target: str

    def apply(self, root: Path) -> str | None:
        os.link(root / self.target, root / self.path)
        return None


@dataclass(frozen=True)
class Remove:
    """Remove `path` (recursively). In a DIFF layer it becomes a 0/0 character device."""

    path: str

    def apply(self, root: Path) -> str | None:
        p = root / self.path
        if not os.path.lexists(p):
            raise FileNotFoundError(errno.ENOENT, "nothing to remove", str(p))
        _rm(p)
        return None


@dataclass(frozen=True)
class Opaque:
    """Replace directory `path` with an empty one, hiding every lower child (an opaque dir)."""

    path: str
    mode: int = 0o755
    uid: int = 0
    gid: int = 0

    def apply(self, root: Path) -> str | None:
        p = root / self.path
        _rm(p)
        os.mkdir(p)
        _attrs(p, self.mode, self.uid, self.gid)
        return None


@dataclass(frozen=True)
class Chown:
    path: str
    uid: int
    gid: int

    def apply(self, root: Path) -> str | None:
        os.lchown(root / self.path, self.uid, self.gid)
        return None


@dataclass(frozen=True)
class Chmod:
    path: str
    mode: int

    def apply(self, root: Path) -> str | None:
        os.chmod(root / self.path, self.mode)
        return None


@dataclass(frozen=True)
class Rename:
    """rename(2); where the driver answers EXDEV, do what mv(1) does: copy, then remove."""

    path: str
    dest: str

    def apply(self, root: Path) -> str | None:
        src, dst = root / self.path, root / self.dest
        try:
            os.rename(src, dst)
            return None
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
        if src.is_dir() and not src.is_symlink():
            copy_tree(str(src), str(dst))
        else:
            shutil.copy2(src, dst, follow_symlinks=False)
            st = os.lstat(src)
            os.lchown(dst, st.st_uid, st.st_gid)
        _rm(src)
        return f"rename {self.path} -> {self.dest}: EXDEV, copied and removed as mv(1) does"


@dataclass(frozen=True)
class SetXattr:
    path: str
    name: str
    value: bytes

    def apply(self, root: Path) -> str | None:
        os.setxattr(root / self.path, self.name, self.value, follow_symlinks=False)
        return None


# By name, not class: the suite may be imported under two module names (--pyargs from a checkout).
#: the changes a layer can carry; the others change a lower entry (a container step)
_LAYER_OPS = (Mkdir, File, Symlink, Link, Remove, Opaque, SetXattr)


def _ensure_parents(diff: Path, ref: Path, rel: str) -> None:
    """Create the parents of `rel` in a DIFF layer with the attributes the reference has."""
    parts = Path(rel).parts[:-1]
    for i in range(len(parts)):
        sub = Path(*parts[: i + 1])
        if os.path.lexists(diff / sub):
            continue
        os.mkdir(diff / sub)
        try:
            st = os.lstat(ref / sub)
            _attrs(diff / sub, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        except FileNotFoundError:
            _attrs(diff / sub, 0o755, 0, 0)


def apply_to_diff(op: Op, diff: Path, ref: Path, opaque_xattr: str = OPAQUE_XATTR) -> None:
    """Write `op` into an empty-at-first DIFF layer: whiteouts and opaque dirs in overlay's format.

    `ref` is the reference tree with the whole change set already applied; parents
    created here copy its attributes. `opaque_xattr` is the driver's (`Driver.opaque_xattr`).
    """
    if not isinstance(op, _LAYER_OPS):
        raise ValueError(f"{type(op).__name__} changes a lower entry: apply it in a container step")
    _ensure_parents(diff, ref, op.path)
    p = diff / op.path
    if isinstance(op, Remove):
        _rm(p)
        make_whiteout(p)
    elif isinstance(op, Opaque):
        op.apply(diff)
        set_opaque(p, opaque_xattr)
    elif isinstance(op, Link) and not os.path.lexists(diff / op.target):
        raise ValueError(f"hardlink {op.path} -> {op.target}: the target must be in the same layer")
    else:
        op.apply(diff)


# --- a driver on a fresh store ---------------------------------------------------------


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
        pytest.skip(f"{cls.name} runs inside a user namespace; the layerbench_driver fixture runs tests there")
    store = BackingStore(workdir, default_backing(cls), size_bytes)
    with store as mnt:
        home = mnt / cls.name
        home.mkdir(mode=0o700)
        driver = cls(home)
        try:
            driver.setup()
            yield driver
        finally:
            driver.close()


@contextmanager
def userns_session(cls: type[Driver], workdir: Path, size_bytes: int = 512 * _MiB) -> Iterator[Driver]:
    """A `userns` driver's fresh store, handed to the unprivileged user; not set up.

    Call `setup` and everything else inside :func:`~layerbench.run.userns.run_in_userns`
    (exposing the store's mount point); `close` here, after it, removes what is left.
    """
    with BackingStore(workdir, default_backing(cls), size_bytes) as mnt:
        home = mnt / cls.name
        home.mkdir(mode=0o700)
        hand_over(mnt)
        driver = cls(home)
        try:
            yield driver
        finally:
            driver.close()


# --- a layer stack checked against a plain directory -----------------------------------


@dataclass
class Stack:
    """A linear image built through a driver and, in step, in a plain reference directory."""

    driver: Driver
    ref: Path
    top: str | None = None
    expected: dict[str, Tree] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _n: int = 0

    def __post_init__(self) -> None:
        self.ref.mkdir(parents=True, exist_ok=True)
        _attrs(self.ref, 0o755, 0, 0)

    def _id(self, kind: str) -> str:
        self._n += 1
        return f"{kind}{self._n}"

    def layer(self, *ops: Op) -> str:
        """A new image layer on the top: created, filled with `ops` in the driver's format, sealed."""
        lid = self._id("l")
        path = self.driver.create_layer(lid, self.top)
        for op in ops:
            op.apply(self.ref)
        if self.driver.layer_format is LayerFormat.FULL:
            for op in ops:
                op.apply(path)
        else:
            for op in ops:
                apply_to_diff(op, path, self.ref, self.driver.opaque_xattr)
        self.driver.seal_layer(lid)
        self.expected[lid] = snapshot(self.ref)
        self.top = lid
        return lid

    def commit(self, *ops: Op) -> str:
        """A container on the top, `ops` done in its mounted root, committed as the new top."""
        if self.top is None:
            raise ValueError("commit needs an image: add a layer first")
        cid = self._id("c")
        self.driver.create_container(cid, self.top)
        root = self.driver.mount(cid)
        try:
            for op in ops:
                if note := op.apply(root):
                    self.notes.append(f"{self.driver.name}: {note}")
        finally:
            self.driver.unmount(cid)
        for op in ops:
            op.apply(self.ref)
        lid = self._id("l")
        self.driver.commit(cid, lid)
        self.driver.remove(cid)
        self.expected[lid] = snapshot(self.ref)
        self.top = lid
        return lid

    def view(self, layer: str | None = None) -> Tree:
        """The tree a fresh container on `layer` (default: the top) shows."""
        image = layer or self.top
        assert image is not None
        cid = self._id("v")
        self.driver.create_container(cid, image)
        root = self.driver.mount(cid)
        try:
            return snapshot(root)
        finally:
            self.driver.unmount(cid)
            self.driver.remove(cid)

    def check(self, layer: str | None = None) -> None:
        """Assert a container on `layer` shows what the plain directory held at that layer."""
        image = layer or self.top
        assert image is not None
        problems = compare(self.expected[image], self.view(image))
        if problems:
            shown = "\n  ".join(problems[:40])
            raise AssertionError(
                f"driver {self.driver.name}: a container on {image} differs from the plain directory:\n  {shown}"
            )

    def check_all(self) -> None:
        """`check` every layer made so far, bottom first."""
        for layer in self.expected:
            self.check(layer)


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
