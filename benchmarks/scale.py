"""How startup and disk grow with containers and layers, with fitted slopes.

containers: overlay2 and btrfs start 1..1,000 containers from one image (1,000 files,
  100 MiB, 3 layers), keeping them all running; at each count it prints the median
  startup of the starts in that step and the store's used bytes over the image
  (syncfs + statvfs), then numpy.polyfit slopes of startup and disk against the count.
layers: overlay2 starts --per-step containers on images of 1, 8, 32, 128, 256 and 500
  layers (one file each) and prints the median startup and its slope per layer; above a
  page of mount data the driver adds lowers through fsconfig(lowerdir+).

Each start is a scenario's timed `start` step, run through the harness (`run.timing.StartTimer`:
create_container + mount + first readdir); images are built with `images.build.build_image`.
Usage: python benchmarks/scale.py [--containers 1000] [--per-step 20] [--json FILE] [--work-root DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from layerbench.driver import Driver
from layerbench.drivers.btrfs import BtrfsDriver
from layerbench.drivers.overlay2 import Overlay2Driver
from layerbench.images.build import build_image, files_image
from layerbench.images.image import FileSpec, synthetic_image
from layerbench.kernel import syscalls
from layerbench.run.session import open_driver
from layerbench.run.timing import StartTimer

COUNTS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
LAYERS = (1, 8, 32, 128, 256, 500)
MiB = 1 << 20


def used_bytes(path: Path) -> int:
    syscalls.syncfs(str(path))
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def slope(xs: list[float], ys: list[float]) -> float:
    return float(np.polyfit(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), 1)[0])


def containers_section(cls: type[Driver], workdir: Path, counts: list[int]) -> dict[str, Any]:
    image = synthetic_image(3, 1000, 100 * MiB, seed=0)
    with open_driver(cls, workdir, cls.backings[0], 2048 * MiB) as session:
        driver, store, mnt = session.driver, session.store, session.store.mountpoint
        timer: StartTimer | None = None
        try:
            top = build_image(driver, image, ids=[f"l{i}" for i in range(image.layer_count)])
            timer = StartTimer(driver, image, top, store)
            base = used_bytes(mnt)
            rows: list[dict[str, Any]] = []
            for n in counts:
                times = []
                while len(timer.containers) < n:  # every container stays running
                    times.append(timer.start())
                rows.append({"containers": n, "startup_ns": times, "disk_bytes": used_bytes(mnt) - base})
                med = statistics.median(times) / 1e3
                print(
                    f"{cls.name:<9} {n:>6} containers  startup {med:>8.1f} µs (median of {len(times):>3})"
                    f"  disk {(rows[-1]['disk_bytes']) / MiB:>8.2f} MiB",
                    flush=True,
                )
            xs = [r["containers"] for r in rows]
            s_start = slope(xs, [statistics.median(r["startup_ns"]) for r in rows])
            s_disk = slope(xs, [r["disk_bytes"] for r in rows])
            print(
                f"{cls.name:<9} slope: startup {s_start / 1e3:+.3f} µs per container, "
                f"disk {s_disk / 1024:+.1f} KiB per container"
            )
            return {"rows": rows, "startup_slope_ns": s_start, "disk_slope_bytes": s_disk}
        finally:
            if timer is not None:
                timer.release()


def layers_section(workdir: Path, layer_counts: list[int], per_step: int) -> dict[str, Any]:
    with open_driver(Overlay2Driver, workdir, "ext4", 1024 * MiB) as session:
        driver, store = session.driver, session.store
        rows: list[dict[str, Any]] = []
        parent: str | None = None
        made = 0
        for count in layer_counts:  # each count's new layers on the last count's image
            new = files_image([(FileSpec(f"l{i}.txt", 64, seed=i),) for i in range(made, count)])
            parent = build_image(driver, new, ids=[f"l{i}" for i in range(made, count)], parent=parent)
            made = count
            timer = StartTimer(driver, new, parent, store, prefix=f"s{count}-")
            times = []
            for k in range(per_step + 2):  # two warm-up starts
                ns = timer.start()
                timer.release()
                if k >= 2:
                    times.append(ns)
            rows.append({"layers": count, "startup_ns": times})
            print(
                f"overlay2  {count:>4} layers  startup {statistics.median(times) / 1e3:>8.1f} µs "
                f"(median of {len(times)})",
                flush=True,
            )
        s = slope([r["layers"] for r in rows], [statistics.median(r["startup_ns"]) for r in rows])
        print(f"overlay2  slope: startup {s / 1e3:+.2f} µs per layer")
        return {"rows": rows, "startup_slope_ns": s}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--containers", type=int, default=1000, help="the largest container count")
    ap.add_argument("--per-step", type=int, default=20, help="starts per layer count")
    ap.add_argument("--json", type=Path, help="write the raw samples (ns, bytes) here")
    ap.add_argument("--work-root", type=Path, default=Path("/var/tmp"), help="where the scratch directory goes")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        print("scale: needs root (loop devices and mounts)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    counts = sorted({c for c in COUNTS if c <= opts.containers} | {opts.containers})
    out: dict[str, Any] = {"kernel": os.uname().release}
    workdir = Path(tempfile.mkdtemp(prefix="layerbench-scale-", dir=opts.work_root))
    try:
        for cls in (Overlay2Driver, BtrfsDriver):
            reason = cls.probe()
            if reason:
                print(f"{cls.name}: skipped: {reason}")
                continue
            (workdir / cls.name).mkdir()
            out[f"containers_{cls.name}"] = containers_section(cls, workdir / cls.name, counts)
        if Overlay2Driver.probe() is None:
            (workdir / "layers").mkdir()
            out["layers_overlay2"] = layers_section(workdir / "layers", list(LAYERS), opts.per_step)
    except KeyboardInterrupt:
        print("interrupted; mounts, loop devices and work directory released", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if opts.json is not None:
        opts.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
