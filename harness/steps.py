"""What each scenario step does. Timed regions hold only the operation itself.

Every op gets the sample's state, the resolved step and a recorder. Paths, buffers,
offsets and ids are prepared before the first clock read; a step over several
files times the whole batch as one sample.
"""

from __future__ import annotations

import errno
import glob
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns
from typing import Any

from . import backing, safety, syscalls
from .driver import Driver
from .image import Image
from .scenario import Step
from .treecopy import copy_tree

__all__ = ["SampleState", "Recorder", "run_step", "OPS"]

Recorder = Callable[[str, int], None]
Outcome = Callable[[str, str], None]


@dataclass
class SampleState:
    """What one sample has made so far; `release` undoes it, untimed."""

    driver: Driver
    image: Image
    top: str
    store: backing.BackingStore
    baseline: backing.Usage
    baseline_walk: int
    prefix: str
    contents: dict[str, bytes] | None = None
    containers: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    roots: dict[str, Path] = field(default_factory=dict)
    volumes: list[str] = field(default_factory=list)
    volume_dirs: list[Path] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    committed: str | None = None
    written: int = 0  # bytes the sample's write steps wrote into the container or its volumes

    @property
    def root(self) -> Path:
        if not self.containers:
            raise RuntimeError("this step needs a container: add a 'start' step before it")
        return self.roots[self.containers[-1]]

    def release(self) -> None:
        """Unmount volumes and containers, remove containers and layers the sample made."""
        for point in reversed(self.volumes):
            syscalls.umount(point)
        for cid in reversed(self.mounted):
            self.driver.unmount(cid)
        for cid in reversed(self.containers):
            self.driver.remove(cid)
        for layer in reversed(self.layers):
            self.driver.remove(layer)
        for host in self.volume_dirs:  # `docker rm -v`: the sample's volumes go with it
            safety.remove_tree(host)
        self.volumes, self.mounted, self.containers, self.layers, self.volume_dirs = [], [], [], [], []
        self.driver.settle()


def _timed(record: Recorder, metric: str | None, fn: Callable[[], object]) -> None:
    t0 = perf_counter_ns()
    fn()
    t1 = perf_counter_ns()
    if metric:
        record(metric, t1 - t0)


def _select(state: SampleState, args: dict[str, Any]) -> list[str]:
    """The files a step works on, as absolute paths, chosen before the clock."""
    root = state.root
    if "path" in args and "count" in args:
        return [str(root / args["path"].replace("{i}", str(i))) for i in range(args["count"])]
    if "path" in args:
        return [str(root / args["path"])]
    if "glob" in args:
        found = sorted(glob.glob(args["glob"], root_dir=root, recursive=True))
        if not found:
            raise FileNotFoundError(errno.ENOENT, f"glob {args['glob']!r} matched nothing")
        return [str(root / p) for p in found]
    files = state.image.file_paths()
    random.Random(0).shuffle(files)
    count = max(1, round(args["fraction"] * len(files)))
    return [str(root / p) for p in sorted(files[:count])]


def _batch(paths: list[str], one: Callable[[str], object]) -> Callable[[], None]:
    def run() -> None:
        for p in paths:
            one(p)

    return run


# -- container-level ops --------------------------------------------------------------


def _start(state: SampleState, step: Step, record: Recorder) -> None:
    driver = state.driver
    image = state.top
    if step.args.get("image") == "committed":
        if state.committed is None:
            raise RuntimeError("start image = 'committed' needs a 'commit' step before it")
        image = state.committed
    for _ in range(step.args.get("count", 1)):
        cid = f"{state.prefix}c{len(state.containers)}"
        state.containers.append(cid)
        t0 = perf_counter_ns()
        driver.create_container(cid, image)
        root = driver.mount(cid)
        os.listdir(root)
        t1 = perf_counter_ns()
        state.mounted.append(cid)
        state.roots[cid] = root
        if step.measure:
            record(step.measure, t1 - t0)


def _remove(state: SampleState, step: Step, record: Recorder) -> None:
    for point in reversed(state.volumes):
        syscalls.umount(point)
    state.volumes = []
    for cid in reversed(state.containers):
        mounted = cid in state.mounted
        t0 = perf_counter_ns()
        if mounted:
            state.driver.unmount(cid)
        state.driver.remove(cid)
        t1 = perf_counter_ns()
        if step.measure:
            record(step.measure, t1 - t0)
    state.containers, state.mounted = [], []


def _commit(state: SampleState, step: Step, record: Recorder) -> None:
    cid, layer = state.containers[-1] if state.containers else None, f"{state.prefix}commit{len(state.layers)}"
    if cid is None:
        raise RuntimeError("'commit' needs a container: add a 'start' step before it")
    before = state.store.usage().bytes
    _timed(record, step.measure, lambda: state.driver.commit(cid, layer))
    state.layers.append(layer)
    state.committed = layer
    record("commit_layer_bytes", state.store.usage().bytes - before)


def _build(state: SampleState, step: Step, record: Recorder) -> None:
    driver, image, fmt = state.driver, state.image, state.driver.layer_format
    ids = [f"{state.prefix}b{i}" for i in range(image.layer_count)]
    contents = state.contents
    before = state.store.usage().bytes

    def build() -> None:
        parent = None
        for i, layer in enumerate(ids):
            root = driver.create_layer(layer, parent)
            state.layers.append(layer)
            if contents is not None:
                image.apply(i, root, fmt, contents)  # type: ignore[call-arg]
            else:
                image.apply(i, root, fmt)
            driver.seal_layer(layer)
            parent = layer

    _timed(record, step.measure, build)
    record("build_disk_bytes", state.store.usage().bytes - before)


def _usage(state: SampleState, step: Step, record: Recorder) -> None:
    used = state.store.usage()
    record("disk_bytes", used.bytes - state.baseline.bytes)
    record("inodes", used.inodes - state.baseline.inodes)
    record("disk_walk_bytes", backing.allocated_bytes(state.store.mountpoint) - state.baseline_walk)


def _volume(state: SampleState, step: Step, record: Recorder) -> None:
    """A volume at `path` in the last container: a bind-mounted host directory or a tmpfs.

    With `populate`, the image's content at that path is copied in first, as Docker
    does for a new named volume. Volume writes bypass the storage driver.
    """
    target = state.root / step.args["path"]
    host = state.store.mountpoint / "volumes" / f"{state.containers[-1]}-{len(state.volumes)}"
    host.parent.mkdir(exist_ok=True)
    populate = step.args.get("populate", False) and target.is_dir()
    state.volume_dirs.append(host)
    if populate:
        copy_tree(str(target), str(host))
    else:
        host.mkdir()
    target.mkdir(parents=True, exist_ok=True)
    if step.args.get("kind", "bind") == "bind":
        syscalls.mount(str(host), str(target), "", syscalls.MS_BIND)
        state.volumes.append(str(target))
    else:
        syscalls.mount("tmpfs", str(target), "tmpfs", 0, "mode=0755")
        state.volumes.append(str(target))
        if populate:  # the tmpfs hides what was there; give it the image's content
            copy_tree(str(host), str(target), into=True)


# -- file ops: one sample per step, over the selected files --------------------------------


def _file_op(state: SampleState, step: Step, record: Recorder) -> None:
    args = step.args
    paths = _select(state, args)
    op = step.op
    if op == "read" and args.get("cold"):
        _evict(paths)
    fn = _FILE_OPS[op](args, paths)
    _timed(record, step.measure, fn)
    if op in ("write", "append", "overwrite"):
        state.written += len(paths) * args.get("bytes", 4 if op == "overwrite" else 1)


def _evict(paths: list[str]) -> None:
    """Make the next read cold: drop every cache as real root; in a user namespace (no
    such right) evict the files' own pages with POSIX_FADV_DONTNEED."""
    try:
        syscalls.drop_caches()
        return
    except PermissionError:
        pass
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data`: a short write (a full disk) goes on until it raises ENOSPC."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_fn(flags: int) -> Callable[[dict[str, Any], list[str]], Callable[[], None]]:
    def make(args: dict[str, Any], paths: list[str]) -> Callable[[], None]:
        data = b"x" * args.get("bytes", 1)

        def one(p: str) -> None:
            fd = os.open(p, flags, 0o644)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)

        if flags & os.O_CREAT:  # new files may need their directories, made before the clock
            for parent in {os.path.dirname(p) for p in paths}:
                os.makedirs(parent, exist_ok=True)
        return _batch(paths, one)

    return make


def _overwrite(args: dict[str, Any], paths: list[str]) -> Callable[[], None]:
    data = b"x" * args.get("bytes", 4)
    offsets = {p: args["offset"] if "offset" in args else os.stat(p).st_size // 2 for p in paths}

    def one(p: str) -> None:
        fd = os.open(p, os.O_WRONLY)
        os.pwrite(fd, data, offsets[p])
        os.close(fd)

    return _batch(paths, one)


def _read(args: dict[str, Any], paths: list[str]) -> Callable[[], None]:
    buf = bytearray(1 << 20)

    def one(p: str) -> None:
        fd = os.open(p, os.O_RDONLY)
        while os.readv(fd, [buf]):
            pass
        os.close(fd)

    return _batch(paths, one)


def _open_rdwr(args: dict[str, Any], paths: list[str]) -> Callable[[], None]:
    return _batch(paths, lambda p: os.close(os.open(p, os.O_RDWR)))


def _fsync(args: dict[str, Any], paths: list[str]) -> Callable[[], None]:
    def one(p: str) -> None:
        fd = os.open(p, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    return _batch(paths, one)


_FILE_OPS: dict[str, Callable[[dict[str, Any], list[str]], Callable[[], None]]] = {
    "write": _write_fn(os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
    "append": _write_fn(os.O_WRONLY | os.O_APPEND),
    "overwrite": _overwrite,
    "truncate": lambda a, ps: _batch(ps, lambda p: os.truncate(p, a["size"])),
    "open_rdwr": _open_rdwr,
    "read": _read,
    "stat": lambda a, ps: _batch(ps, os.lstat),
    "fsync": _fsync,
    "chmod": lambda a, ps: _batch(ps, lambda p: os.chmod(p, a["mode"])),
    "chown": lambda a, ps: _batch(ps, lambda p: os.lchown(p, a["uid"], a["gid"])),
    "unlink": lambda a, ps: _batch(ps, os.unlink),
}


def _path_op(state: SampleState, step: Step, record: Recorder) -> None:
    root = state.root
    src = str(root / step.args["path"])
    if step.op == "rename":
        dst = str(root / step.args["to"])
        _timed(record, step.measure, lambda: os.rename(src, dst))
    elif step.op == "mkdir":
        _timed(record, step.measure, lambda: os.mkdir(src))
    else:
        _timed(record, step.measure, lambda: os.listdir(src))


OPS: dict[str, Callable[[SampleState, Step, Recorder], None]] = {
    "start": _start,
    "remove": _remove,
    "commit": _commit,
    "build": _build,
    "usage": _usage,
    "volume": _volume,
    **{op: _file_op for op in _FILE_OPS},
    "rename": _path_op,
    "mkdir": _path_op,
    "readdir": _path_op,
}


def run_step(state: SampleState, step: Step, record: Recorder, outcome: Outcome) -> None:
    """Run one step; an error the step allows (EXDEV, EROFS ...) is an outcome, not a crash."""
    try:
        OPS[step.op](state, step, record)
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, "")
        if name not in step.allow_errors:
            raise
        outcome(step.label, name)
