"""The bare-kernel floor under layerbench's `startup_ns`, measured side by side in one run.

overlay2/ext4: one overlay mount(2) or fsconfig(lowerdir+) sequence + first readdir; btrfs: one
BTRFS_IOC_SNAP_CREATE_V2 + first readdir; each against what `harness/steps.py::_start` times.
Ops are interleaved, order rotating every round, so they share noise; set-up and clean-up
stay outside the clock. Usage: python benchmarks/floor.py [--samples N] [--layers 8] [--json FILE]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from time import perf_counter_ns

from layerbench.drivers._common import unmount_below
from layerbench.drivers.btrfs import BTRFS_IOC_SNAP_CREATE_V2, BtrfsDriver, _snap_args
from layerbench.drivers.overlay2 import Overlay2Driver
from layerbench.harness import syscalls
from layerbench.harness.backing import BackingStore
from layerbench.harness.driver import Driver

Op = Callable[[int], int]  # round number -> nanoseconds of the timed region
Samples = dict[str, list[int]]
WARMUP = 3
STORE_BYTES = 512 << 20
OVERLAY_OPTIONS = (("index", "off"),)  # what Overlay2Driver.mount passes
MOUNT2, FSCONFIG, IOCTL, STARTUP = "bare mount(2)", "bare fsconfig", "bare snapshot ioctl", "layerbench startup"
LAYOUT = "bare layout+mount(2)"
_DIR = os.O_RDONLY | os.O_DIRECTORY
PAGE = os.sysconf("SC_PAGE_SIZE")


def build_image(driver: Driver, layers: int) -> str:
    """Create and seal `layers` layers of a few small files each; return the top id."""
    parent: str | None = None
    for i in range(layers):
        path = driver.create_layer(f"l{i}", parent)
        (path / f"d{i}").mkdir()
        for j in range(4):
            (path / f"d{i}" / f"f{j}").write_bytes(b"x" * 128 * (j + 1))
        driver.seal_layer(f"l{i}")
        parent = f"l{i}"
    return f"l{layers - 1}"


def startup_op(driver: Driver, image: str) -> Op:
    """The timed region of `steps._start`; unmount and remove after the clock."""

    def op(r: int) -> int:
        cid = f"lb{r}"
        t0 = perf_counter_ns()
        driver.create_container(cid, image)
        root = driver.mount(cid)
        os.listdir(root)
        t1 = perf_counter_ns()
        driver.unmount(cid)
        driver.remove(cid)
        return t1 - t0

    return op


def bare_overlay_op(bare: Path, lowers: list[str], new_api: bool) -> Op:
    """overlay_mount + listdir on fresh upper/work/merged dirs made before the clock."""

    def op(r: int) -> int:
        d = bare / f"{'fsconfig' if new_api else 'mount2'}{r}"
        upper, work, merged = str(d / "diff"), str(d / "work"), str(d / "merged")
        for path, mode in ((str(d), 0o700), (upper, 0o755), (work, 0o700), (merged, 0o755)):
            os.mkdir(path, mode)
        t0 = perf_counter_ns()
        syscalls.overlay_mount(merged, lowers, upper, work, OVERLAY_OPTIONS, new_api=new_api)
        os.listdir(merged)
        t1 = perf_counter_ns()
        syscalls.umount(merged)
        shutil.rmtree(d)
        return t1 - t0

    return op


def bare_layout_op(bare: Path, lowers: list[str]) -> Op:
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
        syscalls.overlay_mount(merged, lowers, diff, work, OVERLAY_OPTIONS, new_api=False)
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
    with BackingStore(workdir, "ext4", STORE_BYTES) as mnt:
        home, bare = mnt / "overlay2", mnt / "bare"
        home.mkdir(mode=0o700)
        bare.mkdir()
        driver = Overlay2Driver(home)
        try:
            driver.setup()
            top = build_image(driver, layers)
            lowers = [str(home / f"l{i}" / "diff") for i in reversed(range(layers))]
            d = bare / f"mount2{WARMUP + samples}"
            extra = "".join(f",{k}={v}" for k, v in OVERLAY_OPTIONS)
            data = f"lowerdir={':'.join(lowers)},upperdir={d}/diff,workdir={d}/work{extra}"
            ops: dict[str, Op] = {}
            if len(data) < PAGE:  # mount(2) silently cuts its data at a page
                ops[MOUNT2] = bare_overlay_op(bare, lowers, new_api=False)
                ops[LAYOUT] = bare_layout_op(bare, lowers)
            else:
                print(f"overlay2: {MOUNT2} skipped: {len(data)}-byte data string does not fit a page")
            if driver.new_api:
                ops[FSCONFIG] = bare_overlay_op(bare, lowers, new_api=True)
            ops[STARTUP] = startup_op(driver, top)
            print(f"overlay2: driver mounts via {'fsconfig lowerdir+' if driver.new_api else 'mount(2)'}")
            return interleave(ops, samples)
        finally:
            try:
                unmount_below(bare)
            finally:
                driver.close()


def btrfs_section(workdir: Path, samples: int, layers: int) -> Samples:
    """btrfs: bare snapshot ioctl against layerbench startup."""
    with BackingStore(workdir, "btrfs", STORE_BYTES) as mnt:
        home = mnt / "btrfs"
        home.mkdir(mode=0o700)
        driver = BtrfsDriver(home)
        try:
            driver.setup()
            top = build_image(driver, layers)
            return interleave({IOCTL: bare_snapshot_op(driver, top), STARTUP: startup_op(driver, top)}, samples)
        finally:
            driver.close()


def quartiles(xs: list[int]) -> tuple[float, float, float]:
    """(median, p25, p75) in microseconds."""
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q2 / 1e3, q1 / 1e3, q3 / 1e3


def print_table(results: dict[str, Samples]) -> None:
    print(f"{'section':<9} {'operation':<22} {'n':>4} {'median µs':>10} {'p25 µs':>10} {'p75 µs':>10}")
    for section, ops in results.items():
        for name, xs in ops.items():
            med, p25, p75 = quartiles(xs)
            print(f"{section:<9} {name:<22} {len(xs):>4} {med:>10.1f} {p25:>10.1f} {p75:>10.1f}")
    for section, bare, label in (("overlay2", MOUNT2, "bare-mount(2)"), ("overlay2", FSCONFIG, "bare-fsconfig"),
                                 ("overlay2", LAYOUT, "bare-layout+mount(2)"), ("btrfs", IOCTL, "bare-ioctl")):
        ops = results.get(section, {})
        if bare in ops and STARTUP in ops:
            ratio = statistics.median(ops[STARTUP]) / statistics.median(ops[bare])
            print(f"{'layerbench/' + label:<33} {section:<9} {ratio:>6.2f}x  (medians)")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds through the same finally blocks as Ctrl-C


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=30, help="timed rounds (after 3 warm-up rounds)")
    ap.add_argument("--layers", type=int, default=8, help="image layers")
    ap.add_argument("--json", type=Path, help="write the raw samples (ns) here")
    opts = ap.parse_args()
    if opts.samples < 2 or opts.layers < 1:
        ap.error("need --samples >= 2 and --layers >= 1")
    signal.signal(signal.SIGTERM, _interrupt)
    sections: dict[str, tuple[Callable[[Path, int, int], Samples], type[Driver], str]] = {
        "overlay2": (overlay_section, Overlay2Driver, "mkfs.ext4"),
        "btrfs": (btrfs_section, BtrfsDriver, "mkfs.btrfs"),
    }
    results: dict[str, Samples] = {}
    workdir = Path(tempfile.mkdtemp(prefix="layerbench-floor-", dir="/var/tmp"))
    try:
        for section, (run, cls, mkfs) in sections.items():
            reason = "not root" if os.geteuid() != 0 else cls.probe()
            if reason is None and shutil.which(mkfs) is None:
                reason = f"{mkfs} is not installed"
            if reason is not None:
                print(f"{section}: skipped: {reason}")
                continue
            (workdir / section).mkdir()
            results[section] = run(workdir / section, opts.samples, opts.layers)
    except KeyboardInterrupt:
        print("interrupted; mounts, loop devices and work directory released", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(results)
    if opts.json is not None:
        meta = {"kernel": os.uname().release, "layers": opts.layers, "warmup": WARMUP, "unit": "ns"}
        opts.json.write_text(json.dumps({**meta, "samples": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
