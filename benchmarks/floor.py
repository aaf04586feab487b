"""The bare-kernel floor under layerbench's timed regions, measured side by side in one run.

Each section times a scenario's `start` step through the harness's own code (`run.timing.StartTimer`,
which runs `steps.run_step`: create_container + mount + first readdir) next to the bare mechanism,
interleaved, order rotating every round, so both share the machine's noise; set-up and clean-up
stay outside the clock. Images are built with `images.build.build_image`, as a run builds them.

overlay2 (ext4 backing), two floors:
  bare mount(2)          the kernel's mount of overlayfs (with the driver's own mount options)
                         + first readdir, on upper/work/merged directories made before the
                         clock. The mechanism alone: what overlayfs costs, with nothing of
                         any driver around it. The issue's 1.3x target.
  bare layout+mount(2)   the same, plus every syscall Docker's overlay2 layout makes for a
                         container layer (dir, diff, link file, l/ symlink, lower file, work,
                         merged), all inside the clock: the floor of the whole operation
                         `startup_ns` times, written as straight-line syscalls. The ratio to it
                         is the harness's and driver's own (Python) overhead.
  bare fsconfig          the new mount API (fsopen + fsconfig lowerdir+ per layer + fsmount +
                         move_mount), which the driver uses only when mount(2)'s data does not
                         fit a page; shown for information.
btrfs: bare BTRFS_IOC_SNAP_CREATE_V2 + first readdir against startup (target 1.2x).
vfs (ext4 backing): `treecopy.copy_tree` of a 1,000-file, 100 MiB synthetic tree, and a vfs
  start through VfsDriver, against `cp -a --reflink=never SRC DST` of the same tree timed as
  a whole command (perf_counter_ns around subprocess.run). `spawn true`, timed the same way,
  is the cost of starting any process: the raw ratio is copy / cp, the spawn-corrected one
  copy / (cp - spawn), which credits cp with nothing it does not do itself (target 1.2x).
  Copies are synced and removed after the clock.
null: a start step through drivers.null.NullDriver on a "dir" store, minus an empty
  timed region: the harness's own overhead per sample (target < 20 us); also
  `harness.overhead.measure`, the figure a run records.

Usage: python benchmarks/floor.py [--samples N] [--layers 8] [--vfs-samples N] [--json FILE] [--work-root DIR]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from time import perf_counter_ns

from layerbench.driver import Driver
from layerbench.drivers._common import unmount_below
from layerbench.drivers._overlay import PAGE, mount_overlay, options_text, overlay_data
from layerbench.drivers.btrfs import BTRFS_IOC_SNAP_CREATE_V2, BtrfsDriver, _snap_args
from layerbench.drivers.null import NullDriver
from layerbench.drivers.overlay2 import Overlay2Driver
from layerbench.drivers.vfs import VfsDriver
from layerbench.images.build import build_image, files_image
from layerbench.images.image import FileSpec, SyntheticImage, synthetic_image
from layerbench.kernel import syscalls
from layerbench.kernel.treecopy import copy_tree
from layerbench.run import overhead
from layerbench.run.session import open_driver
from layerbench.run.timing import StartTimer

Op = Callable[[int], int]  # round number -> nanoseconds of the timed region
Samples = dict[str, list[int]]
WARMUP = 3
STORE_BYTES = 512 << 20
MOUNT2, FSCONFIG, IOCTL, STARTUP = "bare mount(2)", "bare fsconfig", "bare snapshot ioctl", "layerbench startup"
LAYOUT = "bare layout+mount(2)"
COPY_TREE, VFS_START, CP, SPAWN = "treecopy.copy_tree", "layerbench startup", "cp -a --reflink=never", "spawn true"
NULL_START, EMPTY = "null startup", "empty timed region"
VFS_FILES, VFS_BYTES = 1000, 100 << 20
VFS_STORE_BYTES = 1 << 30
_DIR = os.O_RDONLY | os.O_DIRECTORY


def small_image(layers: int) -> SyntheticImage:
    """`layers` layers of four small files each (`d<i>/f<j>`, 128 to 512 bytes)."""
    return files_image(
        [[FileSpec(f"d{i}/f{j}", 128 * (j + 1), seed=i * 4 + j) for j in range(4)] for i in range(layers)]
    )


def build(driver: Driver, image: SyntheticImage) -> str:
    """`image` built on `driver` as layers `l0`, `l1`...; the top id."""
    return build_image(driver, image, ids=[f"l{i}" for i in range(image.layer_count)])


def startup_op(timer: StartTimer) -> Op:
    """A scenario's timed `start` step; its container unmounted and removed after the clock."""

    def op(r: int) -> int:
        ns = timer.start()
        timer.release()
        return ns

    return op


def bare_overlay_op(bare: Path, lowers: list[str], options: Sequence[tuple[str, str | None]], new_api: bool) -> Op:
    """overlay_mount + listdir on fresh upper/work/merged dirs made before the clock."""

    def op(r: int) -> int:
        d = bare / f"{'fsconfig' if new_api else 'mount2'}{r}"
        upper, work, merged = str(d / "diff"), str(d / "work"), str(d / "merged")
        for path, mode in ((str(d), 0o700), (upper, 0o755), (work, 0o700), (merged, 0o755)):
            os.mkdir(path, mode)
        t0 = perf_counter_ns()
        if new_api:
            syscalls.overlay_mount(merged, lowers, upper, work, options)
        else:
            mount_overlay(merged, lowers, upper, work, options, fsconfig=False)
        os.listdir(merged)
        t1 = perf_counter_ns()
        syscalls.umount(merged)
        shutil.rmtree(d)
        return t1 - t0

    return op


def bare_layout_op(bare: Path, lowers: list[str], options: Sequence[tuple[str, str | None]]) -> Op:
    """Docker's container-layer syscalls (dir, diff, link, l/ symlink, lower, work, merged)
    + mount(2) + listdir, all timed: the floor of the whole operation `startup_ns` times."""
    (bare / "l").mkdir(exist_ok=True)
    lower_text = ":".join(lowers).encode()

    def op(r: int) -> int:
        d = f"{bare}/layout{r}"
        diff, work, merged, link, lower = f"{d}/diff", f"{d}/work", f"{d}/merged", f"{d}/link", f"{d}/lower"
        short, flags = f"{bare}/l/L{r:025d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL
        t0 = perf_counter_ns()
        os.mkdir(d, 0o700)
        os.mkdir(diff, 0o755)
        fd = os.open(link, flags, 0o644)
        os.write(fd, short[-26:].encode())
        os.close(fd)
        os.symlink(f"../layout{r}/diff", short)
        fd = os.open(lower, flags, 0o644)
        os.write(fd, lower_text)
        os.close(fd)
        os.mkdir(work, 0o700)
        os.mkdir(merged)
        mount_overlay(merged, lowers, diff, work, options, fsconfig=False)
        os.listdir(merged)
        t1 = perf_counter_ns()
        syscalls.umount(merged)
        os.unlink(short)
        shutil.rmtree(d)
        return t1 - t0

    return op


def bare_snapshot_op(driver: BtrfsDriver, image: str) -> Op:
    """One snapshot ioctl + listdir, fds and argument buffer prepared before the clock."""

    def op(r: int) -> int:
        name = f"bare{r}"
        path = str(driver.subvolumes / name)
        dirfd = os.open(driver.subvolumes, _DIR)
        src = os.open(driver.subvolumes / image, _DIR)
        args = _snap_args(src, name)
        try:
            t0 = perf_counter_ns()
            fcntl.ioctl(dirfd, BTRFS_IOC_SNAP_CREATE_V2, args)
            os.listdir(path)
            t1 = perf_counter_ns()
        finally:
            os.close(src)
            os.close(dirfd)
        driver.remove(name)
        return t1 - t0

    return op


def interleave(ops: dict[str, Op], samples: int) -> Samples:
    """Run every op once per round, rotating the order; drop the warm-up rounds."""
    names = list(ops)
    out: Samples = {name: [] for name in names}
    for r in range(WARMUP + samples):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            ns = ops[name](r)
            if r >= WARMUP:
                out[name].append(ns)
    return out


def overlay_section(workdir: Path, samples: int, layers: int) -> Samples:
    """overlay2 on ext4: bare mount(2) and fsconfig against layerbench startup."""
    with open_driver(Overlay2Driver, workdir, "ext4", STORE_BYTES) as session:
        driver, store, bare = session.driver, session.store, session.store.mountpoint / "bare"
        bare.mkdir()
        try:
            image = small_image(layers)
            top = build(driver, image)
            timer = StartTimer(driver, image, top, store)
            info = driver.inspect(top)  # the image's layer directories, uppermost first, as the driver has them
            lowers = [info["UpperDir"], *filter(None, info.get("LowerDir", "").split(":"))]
            options = driver.mount_options  # what the driver's own mount passes beyond the dirs
            d = bare / f"mount2{WARMUP + samples}"
            data = overlay_data(lowers, f"{d}/diff", f"{d}/work", options)
            ops: dict[str, Op] = {}
            if len(data) < PAGE:  # mount(2) silently cuts its data at a page
                ops[MOUNT2] = bare_overlay_op(bare, lowers, options, new_api=False)
                ops[LAYOUT] = bare_layout_op(bare, lowers, options)
            else:
                print(f"overlay2: {MOUNT2} skipped: {len(data)}-byte data string does not fit a page")
            if driver.new_api:
                ops[FSCONFIG] = bare_overlay_op(bare, lowers, options, new_api=True)
            ops[STARTUP] = startup_op(timer)
            timer.start()  # one start to ask the driver how it mounts; the warm-up rounds follow
            how = driver.mounted_via[timer.containers[-1]]
            timer.release()
            print(f"overlay2: {layers} layers; the driver mounts via {how}, options {options_text(options)}")
            return interleave(ops, samples)
        finally:
            unmount_below(bare)


def btrfs_section(workdir: Path, samples: int, layers: int) -> Samples:
    """btrfs: bare snapshot ioctl against layerbench startup."""
    with open_driver(BtrfsDriver, workdir, "btrfs", STORE_BYTES) as session:
        driver, store = session.driver, session.store
        image = small_image(layers)
        top = build(driver, image)
        timer = StartTimer(driver, image, top, store)
        return interleave({IOCTL: bare_snapshot_op(driver, top), STARTUP: startup_op(timer)}, samples)


def copy_tree_op(src: str, copies: Path) -> Op:
    """`copy_tree` of the whole tree; synced and removed after the clock."""

    def op(r: int) -> int:
        dst = str(copies / f"ct{r}")
        t0 = perf_counter_ns()
        copy_tree(src, dst)
        t1 = perf_counter_ns()
        os.sync()
        shutil.rmtree(dst)
        return t1 - t0

    return op


def command_op(argv: list[str], made: Path | None = None) -> Op:
    """A whole command, spawned and waited for, `{r}` in its arguments replaced by the round."""

    def op(r: int) -> int:
        args = [a.replace("{r}", str(r)) for a in argv]
        t0 = perf_counter_ns()
        subprocess.run(args, check=True)
        t1 = perf_counter_ns()
        if made is not None:
            os.sync()
            shutil.rmtree(str(made).replace("{r}", str(r)))
        return t1 - t0

    return op


def vfs_startup_op(timer: StartTimer) -> Op:
    """`startup_op` for vfs, with the sync between rounds outside the clock."""
    start = startup_op(timer)

    def op(r: int) -> int:
        ns = start(r)
        os.sync()
        return ns

    return op


def vfs_section(workdir: Path, samples: int, layers: int) -> Samples:
    """vfs on ext4: copy_tree and a vfs start against `cp -a --reflink=never`, and a bare spawn."""
    cp, true = shutil.which("cp"), shutil.which("true")
    assert cp is not None and true is not None
    with open_driver(VfsDriver, workdir, "ext4", VFS_STORE_BYTES) as session:
        driver, store, home, copies = session.driver, session.store, session.home, session.store.mountpoint / "copies"
        copies.mkdir()
        image = synthetic_image(1, VFS_FILES, VFS_BYTES)
        top = build(driver, image)
        timer = StartTimer(driver, image, top, store)
        os.sync()
        src = str(home / "dir" / "l0")
        print(f"vfs: tree of {image.total_files} files, {image.total_bytes >> 20} MiB on ext4")
        return interleave(
            {
                COPY_TREE: copy_tree_op(src, copies),
                VFS_START: vfs_startup_op(timer),
                CP: command_op([cp, "-a", "--reflink=never", src, f"{copies}/cp{{r}}"], copies / "cp{r}"),
                SPAWN: command_op([true]),
            },
            samples,
        )


def null_section(workdir: Path, samples: int, layers: int) -> Samples:
    """A start step through the null driver on its first backing ("dir"), and an empty timed region."""
    rounds = max(samples, 2000)
    with open_driver(NullDriver, workdir, NullDriver.backings[0], 0) as session:
        driver, store = session.driver, session.store
        image = files_image([()])  # one empty layer
        timer = StartTimer(driver, image, build(driver, image), store)

        def empty_op(r: int) -> int:
            t0 = perf_counter_ns()
            t1 = perf_counter_ns()
            return t1 - t0

        return interleave({NULL_START: startup_op(timer), EMPTY: empty_op}, rounds)


def quartiles(xs: list[int]) -> tuple[float, float, float]:
    """(median, p25, p75) in microseconds."""
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q2 / 1e3, q1 / 1e3, q3 / 1e3


def print_table(results: dict[str, Samples]) -> None:
    print(f"{'section':<9} {'operation':<22} {'n':>5} {'median µs':>10} {'p25 µs':>10} {'p75 µs':>10}")
    for section, ops in results.items():
        for name, xs in ops.items():
            med, p25, p75 = quartiles(xs)
            print(f"{section:<9} {name:<22} {len(xs):>5} {med:>10.1f} {p25:>10.1f} {p75:>10.1f}")


def _median(results: dict[str, Samples], section: str, op: str) -> float | None:
    xs = results.get(section, {}).get(op)
    return statistics.median(xs) if xs else None


#: (label, section, numerator op, denominator op, subtract from the denominator, target ratio or None)
RATIOS: tuple[tuple[str, str, str, str, str | None, float | None], ...] = (
    ("overlay2 startup / bare mount(2)", "overlay2", STARTUP, MOUNT2, None, 1.3),
    ("overlay2 startup / bare layout+mount(2)", "overlay2", STARTUP, LAYOUT, None, 1.3),
    ("overlay2 startup / bare fsconfig (info)", "overlay2", STARTUP, FSCONFIG, None, None),
    ("btrfs startup / bare snapshot ioctl", "btrfs", STARTUP, IOCTL, None, 1.2),
    ("vfs copy_tree / cp -a  (raw)", "vfs", COPY_TREE, CP, None, 1.2),
    ("vfs copy_tree / (cp -a - spawn)  (spawn-corrected)", "vfs", COPY_TREE, CP, SPAWN, 1.2),
    ("vfs startup / cp -a  (raw)", "vfs", VFS_START, CP, None, 1.2),
    ("vfs startup / (cp -a - spawn)  (spawn-corrected)", "vfs", VFS_START, CP, SPAWN, 1.2),
)
NULL_TARGET_US = 20.0


def summary(results: dict[str, Samples], recorded: dict[str, int] | None) -> list[str]:
    """Each ratio of medians next to its target, met or not met."""
    lines = [f"{'summary (ratios of medians, one run)':<52} {'value':>9} {'target':>9}  verdict"]
    for label, section, num, den, minus, target in RATIOS:
        a, b = _median(results, section, num), _median(results, section, den)
        if a is None or b is None:
            continue
        if minus is not None:
            m = _median(results, section, minus)
            if m is None:
                continue
            b -= m
        ratio = a / b
        verdict = "-" if target is None else ("met" if ratio <= target else "NOT MET")
        want = "" if target is None else f"<= {target:.1f}x"
        lines.append(f"{label:<52} {ratio:>8.2f}x {want:>9}  {verdict}")
    start, empty = _median(results, "null", NULL_START), _median(results, "null", EMPTY)
    if start is not None and empty is not None:
        us = (start - empty) / 1e3
        verdict = "met" if us < NULL_TARGET_US else "NOT MET"
        lines.append(f"{'null-driver overhead per sample (start - empty)':<52} {us:>6.2f} µs {'< 20 µs':>9}  {verdict}")
    if recorded is not None and "null_start_ns" in recorded:
        us = recorded["null_start_ns"] / 1e3
        verdict = "met" if us < NULL_TARGET_US else "NOT MET"
        lines.append(
            f"{'null_start_ns as a run records it (overhead.measure)':<52} {us:>6.2f} µs {'< 20 µs':>9}  {verdict}"
        )
    return lines


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds through the same finally blocks as Ctrl-C


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=30, help="timed rounds (after 3 warm-up rounds)")
    ap.add_argument("--layers", type=int, default=8, help="image layers")
    ap.add_argument("--vfs-samples", type=int, default=15, help="timed rounds of the vfs section (100 MiB copies)")
    ap.add_argument(
        "--only",
        action="append",
        choices=["overlay2", "btrfs", "vfs", "null"],
        help="run only this section (repeatable)",
    )
    ap.add_argument("--json", type=Path, help="write the raw samples (ns) here")
    ap.add_argument("--work-root", type=Path, default=Path("/var/tmp"), help="where the scratch directory goes")
    opts = ap.parse_args()
    if opts.samples < 2 or opts.vfs_samples < 2 or opts.layers < 1:
        ap.error("need --samples >= 2, --vfs-samples >= 2 and --layers >= 1")
    signal.signal(signal.SIGTERM, _interrupt)
    sections: dict[str, tuple[Callable[[Path, int, int], Samples], type[Driver], str]] = {
        "overlay2": (overlay_section, Overlay2Driver, "mkfs.ext4"),
        "btrfs": (btrfs_section, BtrfsDriver, "mkfs.btrfs"),
        "vfs": (vfs_section, VfsDriver, "mkfs.ext4"),
        "null": (null_section, NullDriver, "true"),
    }
    results: dict[str, Samples] = {}
    recorded: dict[str, int] | None = None
    workdir = Path(tempfile.mkdtemp(prefix="layerbench-floor-", dir=opts.work_root))
    try:
        for section, (run, cls, mkfs) in sections.items():
            if opts.only and section not in opts.only:
                continue
            reason = "not root" if os.geteuid() != 0 and section != "null" else cls.probe()
            if reason is None and shutil.which(mkfs) is None:
                reason = f"{mkfs} is not installed"
            if reason is not None:
                print(f"{section}: skipped: {reason}")
                continue
            (workdir / section).mkdir()
            samples = opts.vfs_samples if section == "vfs" else opts.samples
            results[section] = run(workdir / section, samples, opts.layers)
            if section == "null":
                recorded = overhead.measure(NullDriver)
    except KeyboardInterrupt:
        print("interrupted; mounts, loop devices and work directory released", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(results)
    print()
    print("\n".join(summary(results, recorded)))
    if opts.json is not None:
        meta = {
            "kernel": os.uname().release,
            "layers": opts.layers,
            "warmup": WARMUP,
            "unit": "ns",
            "vfs_tree": {"files": VFS_FILES, "bytes": VFS_BYTES},
            "overhead_measure": recorded,
        }
        opts.json.write_text(json.dumps({**meta, "samples": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
