"""What each scenario step does. Timed regions hold only the operation itself.

Every op gets the sample's state, the resolved step and a recorder. Paths, buffers,
offsets and ids are prepared before the first clock read; a step over several
files times the whole batch as one sample.

File steps touch regular files only (docs/images.md, threat model): the selection (run/selection.py)
drops every other entry (symlinks, devices, fifos, sockets, directories) and says
so, globs never follow a symlink, and every open is O_NOFOLLOW | O_NONBLOCK with
a type check after it.

Every file operation is confined to the container's root by construction
(harness/kernel/confined.py, docs/scenarios.md): the parent directory of each path
is opened by openat2(2) beneath the root's fd before the clock (no `..` above it, no
symlink, no absolute path), and the timed op is one syscall on a single name in it
(openat, unlinkat, renameat, fchmodat2, fchownat, fstatat, mkdirat). A path that
would leave the root fails with `Escape` before anything is touched, whatever the
scenario check let through.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import stat
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns
from typing import Any

from layerbench.driver import Driver
from layerbench.errors import UserError
from layerbench.images.build import build_image
from layerbench.images.caches import cache_root
from layerbench.images.config import ImageConfig, config_of
from layerbench.images.image import Image, LayerSpec, SyntheticImage, skipped_at_import
from layerbench.images.layer_apply import SKIPPED_LISTED
from layerbench.images.registry_client import client_for
from layerbench.kernel import confined, mountinfo, pagecache, safety, syscalls
from layerbench.kernel.confined import Parents, Root
from layerbench.kernel.netshape import parse_link
from layerbench.kernel.treecopy import copy_tree
from layerbench.ops import OPS
from layerbench.run import backing, engine, ready, runtime
from layerbench.run.ledger import Ledger
from layerbench.run.pull import StoreLayers, pull_image
from layerbench.run.registry import Registries
from layerbench.run.selection import counted, entry_kind, select_files, skipped_text
from layerbench.run.userns import hand_over
from layerbench.scenario import Step

__all__ = [
    "SampleState",
    "Recorder",
    "run_step",
    "BEHAVIOUR",
    "RUNTIME_DIR",
    "SPOOL_DIR",
    "cell_registries",
    "start_registries",
]

#: where the `run` step keeps its runtimes' bundles and state, in the store (the page-cache accounting skips it)
RUNTIME_DIR = "runtime"
#: where `pull` spools each sample's blobs, in the cell's directory beside the store (made and removed per pull)
SPOOL_DIR = "spool"

Recorder = Callable[[str, int], None]
Outcome = Callable[[str, str], None]
#: a path of a step, resolved before the clock: its parent directory's fd and its last name
Target = tuple[int, str]


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
    images: dict[str, str] = field(default_factory=dict)  # image name -> its top layer ("base": `top`)
    #: [[images]] a build step imports (prebuilt = false): name -> (base image name or None, image, its contents)
    unbuilt: dict[str, tuple[str | None, Image, dict[str, bytes] | None]] = field(default_factory=dict)
    containers: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    roots: dict[str, Path] = field(default_factory=dict)
    volumes: list[str] = field(default_factory=list)
    volume_dirs: list[Path] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    committed: str | None = None
    written: int = 0  # bytes the sample's write steps wrote into the container or its volumes
    skipped: dict[str, Counter[str]] = field(default_factory=dict)  # step label -> entries its selection skipped
    registries: Registries | None = None  # the cell's registries, one per link (run/registry.py): `pull` starts them
    pulled: StoreLayers = field(default_factory=StoreLayers)  # layers the sample's pulls put in the store, by chain
    configs: dict[str, ImageConfig] = field(default_factory=dict)  # image name ("base" too) -> config, once pulled
    processes: list[runtime.Container] = field(default_factory=list)  # `run` containers still running (keep)
    recorded: dict[str, int] = field(default_factory=dict)  # each metric the sample recorded, its last value
    notes: list[str] = field(default_factory=list)  # what the running step saw, each an outcome of it
    import_skipped: list[str] = field(default_factory=list)  # what its builds' and pulls' layers did not apply

    @property
    def root(self) -> Path:
        if not self.containers:
            raise RuntimeError("this step needs a container: add a 'start' step before it")
        return self.roots[self.containers[-1]]

    def confined(self, cid: str | None = None) -> Root:
        """Container `cid`'s root (default: the last container's), opened as the fd every path of a
        step is resolved beneath. The step closes it (`with`): no descriptor outlives a step, so none
        holds a mount busy when a cell is released after an error."""
        return Root(self.root if cid is None else self.roots[cid])

    def release_volumes(self) -> None:
        """Unmount the sample's volumes (each mounted below a container's root), last first."""
        for point in reversed(self.volumes):
            syscalls.umount(point, syscalls.UMOUNT_NOFOLLOW)
        self.volumes = []

    def release(self) -> None:
        """Stop running containers; unmount volumes and containers, remove containers and layers the sample made."""
        for box in reversed(self.processes):
            box.stop()
        self.processes = []
        self.release_volumes()
        for cid in reversed(self.mounted):
            self.driver.unmount(cid)
        for cid in reversed(self.containers):
            self.driver.remove(cid)
        for layer in reversed(self.layers):
            self.driver.remove(layer)
        for host in self.volume_dirs:  # `docker rm -v`: the sample's volumes go with it
            safety.remove_tree(host)
        self.pulled.forget(set(self.layers))
        self.volumes, self.mounted, self.containers, self.layers, self.volume_dirs = [], [], [], [], []
        self.driver.settle()


def _timed(record: Recorder, metric: str | None, fn: Callable[[], object]) -> None:
    t0 = perf_counter_ns()
    fn()
    t1 = perf_counter_ns()
    if metric:
        record(metric, t1 - t0)


#: every open a file step makes: no symlink followed, no wait on a fifo, not inherited
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NOT_REGULAR = "not a regular file: file steps open regular files only"


def _report_skipped(state: SampleState, step: Step, outcome: Outcome) -> None:
    """What the step's selection skipped, as one outcome per kind of entry per sample."""
    for kind, n in sorted(state.skipped.pop(step.label, Counter()).items()):
        outcome(step.label, f"skipped {counted(kind, n)}")


def _open(target: Target, flags: int, mode: int = 0o644) -> int:
    """openat(2) of a regular file, one name in its parent's fd: no symlink followed, no blocking,
    and the type checked on the fd."""
    pfd, name = target
    fd = os.open(name, flags | _OPEN_FLAGS, mode, dir_fd=pfd)
    st_mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"a {entry_kind(st_mode)}, {_NOT_REGULAR}", name)
    return fd


def _check_type(fd: int, rel: str) -> None:
    st_mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(st_mode):
        raise OSError(errno.EINVAL, f"a {entry_kind(st_mode)}, {_NOT_REGULAR}", rel)


def _batch(targets: list[Target], one: Callable[[Target], object]) -> Callable[[], None]:
    def run() -> None:
        for t in targets:
            one(t)

    return run


# -- container-level ops --------------------------------------------------------------


def _image_top(state: SampleState, name: str, op: str) -> str:
    """The top layer of the image a `start` or `run` step names: base, committed or an [[images]] entry."""
    if name == "committed":
        if state.committed is None:
            raise RuntimeError(f"{op} image = 'committed' needs a 'commit' step before it")
        return state.committed
    if name != "base":
        if name not in state.images:
            raise RuntimeError(f"{op} image = {name!r} needs a 'build' step importing it before it")
        return state.images[name]
    return state.top


def _start(state: SampleState, step: Step, record: Recorder) -> None:
    driver = state.driver
    image = _image_top(state, step.args.get("image", "base"), "start")
    for _ in range(OPS["start"].with_defaults(step.args)["count"]):
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


def _store_files(state: SampleState, skip: set[str]) -> list[str]:
    """The store's regular files (`pagecache.regular_files`) but those under `skip` (paths)."""
    return [p for p in pagecache.regular_files(state.store.mountpoint) if not any(p.startswith(d) for d in skip)]


def _run(state: SampleState, step: Step, record: Recorder) -> None:
    """Start the image's entrypoint in a new container through a runtime, wait until it is ready, stop it
    (with `keep`, at the sample's end). Phases: create_ns (the driver's snapshot + mount), runtime_ns
    (bundle to process created), ready_ns (exec to ready); read_bytes is the page cache the store's
    files gained (what the start read of the image), read_fraction that over the image's bytes."""
    args = OPS["run"].with_defaults(step.args)
    name = args.get("image", "base")
    image = _image_top(state, name, "run")
    config, rt = _run_config(state, name, args)
    pre = f"{args['prefix']}_" if "prefix" in args else ""
    work = state.store.mountpoint / RUNTIME_DIR
    work.mkdir(mode=0o700, exist_ok=True)
    cid = f"{state.prefix}r{len(state.containers)}"
    # what the start may read, listed (and for a cold start evicted) before the clock
    skip = {str(work) + "/"} | {str(r) + "/" for r in state.roots.values()}
    files = _store_files(state, skip)
    if args["cold"]:
        pagecache.evict_files(files)
    if isinstance(state.driver, engine.EngineImages):  # read_bytes: the image's files, not the engine's records
        files = [f for f in files if f.startswith(f"{state.driver.image_files()}/")]
    cached = pagecache.cached_bytes(files)
    state.containers.append(cid)
    start = _start_in_engine if isinstance(state.driver, engine.EngineImages) else _start_with_runtime
    box, phases, own, own_cached = start(state, args, cid, image, config, rt, work, pre)
    read = pagecache.cached_bytes(files) - cached + pagecache.cached_bytes(own) - own_cached
    if not args["keep"]:
        state.processes.remove(box)
        box.stop()
    _record_run(state, args, record, name, phases, read)


#: a started `run` container, its phases (create, runtime, ready ns), its own files and their cached bytes before
_Started = tuple[runtime.Container, tuple[int, int, int], list[str], int]


def _run_config(state: SampleState, name: str, args: dict[str, Any]) -> tuple[ImageConfig, str]:
    """The `run` step's image config (it must name a command) and its runtime (it must be here)."""
    config = state.configs.get(name)
    config = config or (config_of(state.image) if name == "base" else None)
    if config is None or not config.argv():
        raise ValueError(
            "run needs an image with an Entrypoint or Cmd in its OCI config "
            "([image] source debian, oci, docker-archive or registry; a synthetic image has none)"
        )
    rt = args.get("runtime") or runtime.default_runtime()
    if (why := runtime.unavailable(rt)) is not None:
        raise RuntimeError(f"runtime {rt}: {why}")
    return config, rt


def _start_in_engine(
    state: SampleState, args: dict[str, Any], cid: str, image: str, config: ImageConfig, rt: str, work: Path, pre: str
) -> _Started:
    """The engine's own create, init and start (run/engine.py), timed there; the container's own files are
    those its create made among the store's layers (a btrfs snapshot's), listed between init and start."""
    assert isinstance(state.driver, engine.EngineImages)
    condition = config.ready or ready.DEFAULT_READY
    made = state.driver.run_image(cid, image, rt, config.argv(), config.env, config.working_dir)
    state.processes.append(made)
    mine = engine.Between(state.driver.image_files(), None if pre else state.notes)
    phases = engine.start(made, condition, float(args["timeout"]), mine)
    return made, phases, mine.files, mine.cached


def _start_with_runtime(
    state: SampleState, args: dict[str, Any], cid: str, image: str, config: ImageConfig, rt: str, work: Path, pre: str
) -> _Started:
    """The driver's snapshot and mount, then the runtime's create and the entrypoint until ready, each timed."""
    condition = config.ready or ready.DEFAULT_READY
    t0 = perf_counter_ns()
    state.driver.create_container(cid, image)
    root = state.driver.mount(cid)
    t1 = perf_counter_ns()
    state.mounted.append(cid)
    state.roots[cid] = root
    # the container's own files (a snapshot's, a copy's: their pages are theirs), unless its root is a mount
    own = [] if str(root) in mountinfo.mount_points() else pagecache.regular_files(root)
    own_cached = pagecache.cached_bytes(own)
    box = runtime.container(rt, cid, root, config.argv(), config.env, config.working_dir, work, state.store.ledger)
    state.processes.append(box)
    t2 = perf_counter_ns()
    box.create()
    t3 = perf_counter_ns()
    if not pre:  # between the clocks, once a sample: the root and the user the process gets, as it sees them
        state.notes.append(runtime.seen_from_inside(box.pid))
    t4 = perf_counter_ns()
    box.begin()
    ready.wait_ready(box, condition, float(args["timeout"]))
    t5 = perf_counter_ns()
    return box, (t1 - t0, t3 - t2, t5 - t4), own, own_cached


def _record_run(
    state: SampleState, args: dict[str, Any], record: Recorder, name: str, phases: tuple[int, int, int], read: int
) -> None:
    """The `run` step's metrics, taken after its clocks: its phases, their sum, what the start read."""
    pre = f"{args['prefix']}_" if "prefix" in args else ""
    create, started, became_ready = phases
    record(f"{pre}create_ns", create)
    record(f"{pre}runtime_ns", started)
    record(f"{pre}ready_ns", became_ready)
    record(f"{pre}start_ns", create + started + became_ready)
    record(f"{pre}read_bytes", max(0, read))
    total = state.image.total_bytes if name == "base" else 0
    if total:
        record(f"{pre}read_fraction", max(0, read) / total)  # type: ignore[arg-type]  # a fraction, not a count
    if args["cold"]:
        pulled = state.recorded.get("pull_ns", 0) + state.recorded.get("unpack_ns", 0)
        record(f"{pre}cold_start_ns", pulled + create + started + became_ready)


def _remove(state: SampleState, step: Step, record: Recorder) -> None:
    state.release_volumes()
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
    """Build the [image] again as new layers or, with `image`, import that not pre-built image onto
    its base (a first import: the sample's `release` removes its layers). `start` may name it then."""
    image, contents = state.image, state.contents
    name, parent = step.args.get("image"), None
    if name is not None:
        base, image, contents = state.unbuilt[name]
        parent = state.images[base] if base else None
    first = len(state.layers)  # ids unique in the sample, however many builds it makes
    ids = [f"{state.prefix}{name + '-' if name else ''}b{first + i}" for i in range(image.layer_count)]
    before = state.store.usage().bytes
    _timed(
        record,
        step.measure,
        lambda: build_image(
            state.driver,
            image,
            ids=ids,
            parent=parent,
            contents=contents,
            created=lambda layer, _root: state.layers.append(layer),
        ),
    )
    record("build_disk_bytes", state.store.usage().bytes - before)
    state.import_skipped = [*state.import_skipped, *skipped_at_import(image)][:SKIPPED_LISTED]
    if name is not None:
        state.images = {**state.images, name: ids[-1]}  # a copy: the runner's map of pre-built images stays


def _pull(state: SampleState, step: Step, record: Recorder) -> None:
    """Pull the [image] (or an [[images]] entry) from the cell's registry over the step's link, as an engine
    does (run/pull.py); it becomes the image `start` uses. The push to the registry is untimed, once."""
    args = OPS["pull"].with_defaults(step.args)
    name, link = args["image"], parse_link(args["link"])
    image = state.image if name == "base" else state.unbuilt[name][1]
    layout = getattr(image, "layout", None)
    if not isinstance(layout, Path):
        raise UserError(
            f"{step.label}: the image has no OCI layout to push to the registry "
            "(sources debian, registry, synthetic-oci and oci with a layout directory have one)"
        )
    if state.registries is None:
        raise UserError(f"{step.label}: this cell has no registry (a pull needs root and docker-registry)")
    reference = state.registries.get(link).push(layout)  # a rootless cell's: started and pushed before its namespace
    client, ref = client_for(reference, insecure=True)
    prefix = f"{state.prefix}p{len(state.layers)}"
    try:
        if isinstance(state.driver, engine.EngineImages):  # the engine's own pull (run/engine.py)
            pulled = engine.pull(state.driver, client, ref, prefix, state.layers)
        else:
            spool = _spool(state.store.mountpoint.parent) / state.prefix
            pulled = pull_image(client, ref, state.driver, state.pulled, spool, id_prefix=prefix, created=state.layers)
    finally:
        client.close()
    pre = f"{args['prefix']}_" if "prefix" in args else ""
    record(f"{pre}pull_ns", pulled.pull_ns)
    if pulled.unpack_ns is not None and pulled.apply_ns is not None:  # an engine's pull unpacks inside pull_ns
        record(f"{pre}unpack_ns", pulled.unpack_ns)
        record(f"{pre}apply_ns", pulled.apply_ns)
    record(f"{pre}pulled_bytes", pulled.transferred)
    record(f"{pre}image_pull_bytes", pulled.image_bytes)
    for i, layer in enumerate(pulled.layers):
        record(f"{pre}pulled_layer{i}_bytes", layer.transferred)
    if name == "base":
        state.top = pulled.top
    state.images = {**state.images, name: pulled.top}  # a copy: the runner's map of pre-built images stays
    state.configs = {**state.configs, name: pulled.config}
    state.import_skipped = [*state.import_skipped, *pulled.skipped][:SKIPPED_LISTED]


def _spool(cell_dir: Path) -> Path:
    spool = cell_dir / SPOOL_DIR
    spool.mkdir(mode=0o700, exist_ok=True)
    return spool


def cell_registries(steps: list[Step], cell_dir: Path, ledger: Ledger | None) -> Registries | None:
    """The registries a cell's `pull` steps start, one per link, stopped when the cell ends (`close`); None
    without a pull step."""
    if not any(x.op == "pull" for x in steps):
        return None
    return Registries(cell_dir, cache_root() / "registry-storage", ledger)


def start_registries(registries: Registries, steps: list[Step], image: Image, unbuilt: dict[str, Image]) -> Path:
    """For a rootless cell, before its user namespace: start the registry of every link its `pull` steps use
    and push their images there (the registry runs as root outside, as a remote one would; the pull runs
    inside), and hand the namespace's user the directory the pulls spool to (returned, to expose)."""
    for step in steps:
        if step.op == "pull":
            args = OPS["pull"].with_defaults(step.args)
            layout = getattr(image if args["image"] == "base" else unbuilt[args["image"]], "layout", None)
            if isinstance(layout, Path):
                registries.get(parse_link(args["link"])).push(layout)
    spool = _spool(registries.home)
    hand_over(spool)
    return spool


def _usage(state: SampleState, step: Step, record: Recorder) -> None:
    """The store's use now, over the empty store's; `prefix` names a second reading (`after_remove_disk_bytes`)."""
    pre = f"{step.args['prefix']}_" if "prefix" in step.args else ""
    state.driver.settle()  # space a removal gave back (btrfs frees a deleted subvolume later)
    used = state.store.usage()
    record(f"{pre}disk_bytes", used.bytes - state.baseline.bytes)
    if used.inodes is not None and state.baseline.inodes is not None:  # btrfs has no inode count
        record(f"{pre}inodes", used.inodes - state.baseline.inodes)
    record(f"{pre}disk_walk_bytes", backing.allocated_bytes(state.store.mountpoint) - state.baseline_walk)


class ContentMismatch(Exception):
    """A file of the merged view does not hold the content a scenario's `expect` step names."""


def _expect(state: SampleState, step: Step, record: Recorder) -> None:
    """Check a file's content in the last container: its sha256 is the given one, or that of the copy
    of the path in image layer `layer` (a synthetic image); a mismatch is the cell's error."""
    rel = step.args["path"]
    if "sha256" in step.args:
        want, what = step.args["sha256"], f"sha256 {step.args['sha256'][:12]}"
    else:
        layer = step.args["layer"]
        specs = (
            state.image.layers[layer].files
            if isinstance(state.image, SyntheticImage) and layer < state.image.layer_count
            else ()
        )
        spec = next((f for f in specs if f.path == rel), None)
        if spec is None:
            raise ValueError(
                f"expect layer = {layer}: image layer {layer} has no file {rel!r} "
                "(layer needs a synthetic [image]; give sha256 otherwise)"
            )
        data = SyntheticImage((LayerSpec((spec,)),)).contents()[str(spec.seed)]
        want, what = hashlib.sha256(data).hexdigest(), f"layer {layer}'s copy"
    with state.confined() as box:
        fd = box.open(rel, os.O_RDONLY | _OPEN_FLAGS)  # openat2 beneath the root: no symlink, no '..'
    digest = hashlib.sha256()
    try:
        _check_type(fd, rel)
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
    finally:
        os.close(fd)
    if digest.hexdigest() != want:
        raise ContentMismatch(f"{rel}: the merged view reads sha256 {digest.hexdigest()[:12]}, not {what}")
    record("expect_files", 1)


#: a page-cache step whose pages something evicted mid-step (drop_caches, memory pressure) is read again
#: from a dropped cache, up to this many times in all; then the sample records no page cache
PAGE_CACHE_TRIES = 3


def _page_cache(state: SampleState, step: Step, record: Recorder) -> None:
    """Read the selected files in each mounted container in turn, from a dropped cache; record the
    page cache the first container's reads added and what each further one added (docs/memory.md).

    Within the step the store's cache should only grow: anyone dropping the page cache meanwhile
    (/proc/vmstat's drop_pagecache moved), a file's cached pages that fell (fadvise, truncation), or pages
    the kernel evicted (cachestat's nr_evicted) make every figure after it wrong (an erofs sample of
    -97.4 MiB once). Then the step starts again; `page_cache_retries` counts the restarts, and a sample
    still evicted after PAGE_CACHE_TRIES records no page cache figure (`page_cache_evicted_pages`
    instead: the pages lost, or 0 when only a drop was seen), so no claim is decided from it."""
    with state.confined() as box, Parents(box) as parents:
        rel, _ = select_files(state.image, step.args, parents)
    store = state.store.mountpoint
    files = pagecache.regular_files(store)  # once: reading adds no file
    lost = 0
    for attempt in range(PAGE_CACHE_TRIES):
        try:
            syscalls.drop_caches()
        except PermissionError:  # a user namespace: evict the store's own pages instead
            pagecache.evict(store)
        dropped = pagecache.drops()  # after our own drop: any later one is someone else's
        states = [pagecache.cache_state(files)]
        evicted = False
        for cid in state.mounted:
            with state.confined(cid) as box, Parents(box) as parents:
                _read(step.args, parents.prepare(rel))()
            states.append(pagecache.cache_state(files))
            lost = pagecache.lost_pages(states[-2], states[-1])
            evicted = bool(lost) or pagecache.drops() != dropped
            if evicted:
                break
        if not evicted:
            for i, (before, after) in enumerate(itertools.pairwise(states)):
                name = "page_cache_first_bytes" if i == 0 else "page_cache_per_container_bytes"
                record(name, after.bytes - before.bytes)
            record("page_cache_bytes", states[-1].bytes - states[0].bytes)
            record("page_cache_retries", attempt)
            return
    record("page_cache_retries", PAGE_CACHE_TRIES)
    record("page_cache_evicted_pages", lost)


def _volume(state: SampleState, step: Step, record: Recorder) -> None:
    """A volume at `path` in the last container: a bind-mounted host directory or a tmpfs.

    With `populate`, the image's content at that path is copied in first, as Docker
    does for a new named volume. Volume writes bypass the storage driver. The target
    is resolved beneath the container's root (openat2) and the volume mounted onto
    that fd (move_mount), so it can only land inside the container.
    """
    with state.confined() as box:
        _mount_volume(state, box, step.args)


def _mount_volume(state: SampleState, box: Root, args: dict[str, Any]) -> None:
    rel = args["path"]
    host = state.store.mountpoint / "volumes" / f"{state.containers[-1]}-{len(state.volumes)}"
    host.parent.mkdir(exist_ok=True)
    try:
        populate = args.get("populate", False) and stat.S_ISDIR(box.lstat(rel).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        populate = False
    state.volume_dirs.append(host)
    if populate:
        with _fd(box.dir(rel)) as src:
            copy_tree(src, str(host))
    else:
        host.mkdir()
    box.makedirs(rel)
    with _fd(box.dir(rel)) as target:
        fd = int(target.rsplit("/", 1)[1])
        point = os.readlink(target)  # where the mount lands: below the root, for its umount
        if args.get("kind", "bind") == "bind":
            syscalls.bind_mount_at(str(host), fd)
        else:
            syscalls.tmpfs_mount_at(fd, "mode=0755")
        state.volumes.append(point)
    if populate and args.get("kind") == "tmpfs":  # the tmpfs hides what was there; give it the image's content
        with _fd(box.dir(rel)) as dst:
            copy_tree(str(host), dst, into=True)


@contextlib.contextmanager
def _fd(fd: int) -> Iterator[str]:
    """`/proc/self/fd/N` of an fd opened beneath a root, for a tool that takes a path; closed after."""
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


# -- file ops: one sample per step, over the selected files --------------------------------


def _file_op(state: SampleState, step: Step, record: Recorder) -> None:
    args = OPS[step.op].with_defaults(step.args)
    with state.confined() as box, Parents(box) as parents:
        paths, skipped = select_files(state.image, args, parents)
        if skipped:
            state.skipped[step.label] = skipped
        if not paths:
            key = next(k for k in ("path", "glob", "fraction") if k in args)
            what = f"{key} {args[key]!r}"
            detail = f" (skipped {skipped_text(skipped)})" if skipped else ""
            raise FileNotFoundError(
                errno.ENOENT, f"{what} selects no regular file{detail}; file steps open regular files only"
            )
        op = step.op
        if op == "write":  # new files may need their directories, made before the clock
            for parent in sorted({os.path.dirname(p) for p in paths}):
                parents.root.makedirs(parent)
        targets = parents.prepare(paths)  # each parent opened beneath the root, before the clock
        if op == "read" and args.get("cold"):
            _evict(targets)
        fn = _FILE_OPS[op](args, targets)
        _timed(record, step.measure, fn)
    if op in ("write", "append", "overwrite"):
        state.written += len(paths) * args["bytes"]


def _evict(targets: list[Target]) -> None:
    """Make the next read cold: drop every cache as real root; in a user namespace (no
    such right) evict the files' own pages with POSIX_FADV_DONTNEED."""
    try:
        syscalls.drop_caches()
        return
    except PermissionError:
        pass
    for t in targets:
        fd = _open(t, os.O_RDONLY)
        try:
            pagecache.drop_pages(fd)
        finally:
            os.close(fd)


#: the most a write step holds in memory: `bytes = N` writes N from a buffer of at most this, again and again
WRITE_CHUNK = 8 << 20


def _buffer(size: int) -> memoryview:
    """The bytes a write step writes from, made before the clock."""
    return memoryview(b"x" * min(size, WRITE_CHUNK))


def _write_all(fd: int, view: memoryview, size: int, offset: int | None = None) -> None:
    """Write `size` bytes from `view` again and again (at `offset`, or at the file offset);
    a short write (a full disk) goes on until it raises ENOSPC."""
    while size > 0:
        chunk = view[: min(size, len(view))]
        n = os.write(fd, chunk) if offset is None else os.pwrite(fd, chunk, offset)
        size -= n
        if offset is not None:
            offset += n


def _write_fn(flags: int) -> Callable[[dict[str, Any], list[Target]], Callable[[], None]]:
    def make(args: dict[str, Any], targets: list[Target]) -> Callable[[], None]:
        size = args["bytes"]
        view = _buffer(size)

        def one(t: Target) -> None:
            fd = _open(t, flags)
            try:
                _write_all(fd, view, size)
            finally:
                os.close(fd)

        return _batch(targets, one)

    return make


def _overwrite(args: dict[str, Any], targets: list[Target]) -> Callable[[], None]:
    size = args["bytes"]
    view = _buffer(size)
    offsets = {
        t: args["offset"] if "offset" in args else os.stat(t[1], dir_fd=t[0], follow_symlinks=False).st_size // 2
        for t in targets
    }

    def one(t: Target) -> None:
        fd = _open(t, os.O_WRONLY)
        try:
            _write_all(fd, view, size, offsets[t])
        finally:
            os.close(fd)

    return _batch(targets, one)


def _read(args: dict[str, Any], targets: list[Target]) -> Callable[[], None]:
    buf = bytearray(1 << 20)

    def one(t: Target) -> None:
        fd = _open(t, os.O_RDONLY)
        while os.readv(fd, [buf]):
            pass
        os.close(fd)

    return _batch(targets, one)


def _open_rdwr(args: dict[str, Any], targets: list[Target]) -> Callable[[], None]:
    return _batch(targets, lambda t: os.close(_open(t, os.O_RDWR)))


def _fsync(args: dict[str, Any], targets: list[Target]) -> Callable[[], None]:
    def one(t: Target) -> None:
        fd = _open(t, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    return _batch(targets, one)


def _truncate(args: dict[str, Any], targets: list[Target]) -> Callable[[], None]:
    """open + ftruncate: truncate(2) takes a path and would resolve it again, outside the root's fd."""
    size = args["size"]

    def one(t: Target) -> None:
        fd = _open(t, os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)

    return _batch(targets, one)


_FILE_OPS: dict[str, Callable[[dict[str, Any], list[Target]], Callable[[], None]]] = {
    "write": _write_fn(os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
    "append": _write_fn(os.O_WRONLY | os.O_APPEND),
    "overwrite": _overwrite,
    "truncate": _truncate,
    "open_rdwr": _open_rdwr,
    "read": _read,
    "stat": lambda a, ts: _batch(ts, lambda t: os.stat(t[1], dir_fd=t[0], follow_symlinks=False)),
    "fsync": _fsync,
    "chmod": lambda a, ts: _batch(ts, lambda t: confined.chmod(t[0], t[1], a["mode"])),
    "chown": lambda a, ts: _batch(ts, lambda t: os.chown(t[1], a["uid"], a["gid"], dir_fd=t[0], follow_symlinks=False)),
    "unlink": lambda a, ts: _batch(ts, lambda t: os.unlink(t[1], dir_fd=t[0])),
}


def _path_op(state: SampleState, step: Step, record: Recorder) -> None:
    with state.confined() as box, Parents(box) as parents:  # beneath the root, before the clock
        pfd, name = parents.at(step.args["path"])
        if step.op == "rename":
            dfd, dname = parents.at(step.args["to"])
            _timed(record, step.measure, lambda: os.rename(name, dname, src_dir_fd=pfd, dst_dir_fd=dfd))
        elif step.op == "mkdir":
            _timed(record, step.measure, lambda: os.mkdir(name, dir_fd=pfd))
        else:
            _timed(record, step.measure, lambda: _listdir(pfd, name))


def _listdir(pfd: int, name: str) -> list[str]:
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | _OPEN_FLAGS, dir_fd=pfd)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


#: op -> what it does; its fields, default metric and footprint are harness/ops.py's
BEHAVIOUR: dict[str, Callable[[SampleState, Step, Recorder], None]] = {
    "start": _start,
    "run": _run,
    "remove": _remove,
    "commit": _commit,
    "build": _build,
    "pull": _pull,
    "usage": _usage,
    "volume": _volume,
    "page_cache": _page_cache,
    "expect": _expect,
    **{op: _file_op for op in _FILE_OPS},
    "rename": _path_op,
    "mkdir": _path_op,
    "readdir": _path_op,
}
if BEHAVIOUR.keys() != OPS.keys():  # an op defined without a behaviour, or the other way round
    raise ImportError(f"step ops without both a definition and a behaviour: {sorted(BEHAVIOUR.keys() ^ OPS.keys())}")


def run_step(state: SampleState, step: Step, record: Recorder, outcome: Outcome) -> None:
    """Run one step; an error the step allows (EXDEV, EROFS ...) is an outcome, not a crash.
    Any other error carries the step's label as a note (`step[2] write`), for the cell's error."""

    def kept(metric: str, value: int) -> None:
        state.recorded[metric] = value
        record(metric, value)

    try:
        BEHAVIOUR[step.op](state, step, kept)
    except Exception as exc:
        name = errno.errorcode.get(exc.errno or 0, "") if isinstance(exc, OSError) else ""
        if name not in step.allow_errors:
            exc.add_note(step.label)
            raise
        outcome(step.label, name)
    finally:
        _report_skipped(state, step, outcome)
        for note in state.notes:
            outcome(step.label, note)
        state.notes.clear()
