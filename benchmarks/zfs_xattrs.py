"""What zfs-fuse's `--enable-xattr` costs the zfs driver, measured side by side (issue 20).

Without it, zfs-fuse refuses every xattr (ENOTSUP) and an image's file capabilities are lost at
import; the zfs driver now passes it (`ZfsDriver.xattrs`). Each round, for each setting in turn
(the order rotating), a fresh store and daemon: a layer of D directories x F files of 4 KiB
applied through `layer_tar.apply_tar_layer` (timed), sealed, a container of it mounted, then
4 KiB overwritten in place in every file (timed). Prints the median of each, per setting.

    python benchmarks/zfs_xattrs.py [--work-root /var/tmp/lb-NAME] [--rounds 3] [--dirs 40] [--files 50]

Needs root and zfs-fuse, and no other zfs-fuse daemon running (it serves one machine-wide
socket). Everything it makes is under the work root and removed after.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import tarfile
from pathlib import Path
from time import perf_counter_ns

from layerbench.driver import LayerFormat
from layerbench.drivers.zfs import ZfsDriver
from layerbench.images.layer_tar import apply_tar_layer
from layerbench.kernel.safety import prepare_work_root
from layerbench.run.session import open_driver


class _NoXattrs(ZfsDriver):
    xattrs = False


def _layer(dirs: int, files: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in range(dirs):
            info = tarfile.TarInfo(f"d{d}/")
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
            for f in range(files):
                info = tarfile.TarInfo(f"d{d}/f{f}")
                info.size = 4096
                tar.addfile(info, io.BytesIO(b"x" * 4096))
    return buf.getvalue()


def _round(cls: type[ZfsDriver], work: Path, layer: bytes, dirs: int, files: int) -> tuple[int, int]:
    """(apply ns, overwrite ns) on a fresh store and daemon."""
    work.mkdir(parents=True)
    with open_driver(cls, work, "dir", 1 << 30) as session:
        driver = session.driver
        path = driver.create_layer("l0", None)
        t0 = perf_counter_ns()
        apply_tar_layer(path, io.BytesIO(layer), LayerFormat.FULL)
        applied = perf_counter_ns() - t0
        driver.seal_layer("l0")
        driver.create_container("c", "l0")
        root = driver.mount("c")
        names = [root / f"d{d}" / f"f{f}" for d in range(dirs) for f in range(files)]
        t0 = perf_counter_ns()
        for name in names:
            with open(name, "r+b") as fh:
                fh.write(b"y" * 4096)
        written = perf_counter_ns() - t0
        driver.unmount("c")
        return applied, written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work-root", default="/var/tmp/layerbench")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dirs", type=int, default=40)
    p.add_argument("--files", type=int, default=50)
    a = p.parse_args()
    if reason := ZfsDriver.probe():
        raise SystemExit(f"zfs: {reason}")
    base = prepare_work_root(Path(a.work_root)) / "zfs-xattrs"
    layer = _layer(a.dirs, a.files)
    got: dict[str, list[tuple[int, int]]] = {"xattrs on": [], "xattrs off": []}
    kinds: list[tuple[str, type[ZfsDriver]]] = [("xattrs on", ZfsDriver), ("xattrs off", _NoXattrs)]
    try:
        for r in range(a.rounds):
            for name, cls in kinds[r % 2 :] + kinds[: r % 2]:
                got[name].append(_round(cls, base / f"{r}-{name.split()[-1]}", layer, a.dirs, a.files))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    entries = a.dirs * (a.files + 1)
    for name, samples in got.items():
        apply_ms = statistics.median(s[0] for s in samples) / 1e6
        write_ms = statistics.median(s[1] for s in samples) / 1e6
        each = ", ".join(f"{s[0] / 1e6:.0f}" for s in samples)
        files = a.dirs * a.files
        print(f"{name}: apply {entries} entries {apply_ms:.0f} ms ({each}); writes {files} x 4 KiB {write_ms:.0f} ms")


if __name__ == "__main__":
    main()
