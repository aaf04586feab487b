"""Facts about this machine and the tool, for the results file."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["machine_info", "tool_info", "machine_name", "disk_description"]


def machine_name() -> str:
    return socket.gethostname().split(".")[0] or "unknown"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def disk_description(path: Path) -> str:
    """What `path` is stored on: its file system, the block device under it and what kind of disk that is,
    e.g. `ext4 on vda (virtio_blk, rotational, 100 GiB)`; as much as the kernel tells."""
    from layerbench.kernel import mountinfo
    from layerbench.units import human

    real = os.path.realpath(path)
    while not os.path.exists(real):
        real = os.path.dirname(real)
    found = [m for m in mountinfo.mounts() if real == m.point or real.startswith(m.point.rstrip("/") + "/")]
    mount = max(found, key=lambda m: len(m.point), default=None)
    fstype = mount.fstype if mount else "unknown"
    dev = os.stat(real).st_dev
    block = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if not block.exists():  # not on a block device: tmpfs, overlay, a network or FUSE file system
        return f"{fstype} on {mount.source if mount else 'unknown'}"
    disk = block.resolve()
    if (disk / "partition").exists():
        disk = disk.parent

    def read(rel: str) -> str:
        try:
            return (disk / rel).read_text().strip()
        except OSError:
            return ""

    kind = read("device/model") or (
        os.path.basename(os.readlink(disk / "device/driver")) if (disk / "device/driver").exists() else ""
    )
    rotational = {"1": "rotational", "0": "non-rotational"}.get(read("queue/rotational"), "")
    size = read("size")
    gib = human(float(int(size) * 512), "bytes") if size.isdigit() and int(size) else ""
    facts = ", ".join(x for x in (kind, rotational, gib) if x)
    return f"{fstype} on {disk.name}" + (f" ({facts})" if facts else "")


def machine_info(work_root: Path | None = None) -> dict[str, object]:
    """This machine: name, kernel, CPU, memory, Python; with `work_root`, the disk the stores are made on."""
    uname = platform.uname()
    disk = {} if work_root is None else {"disk": disk_description(work_root)}
    return {
        "name": machine_name(),
        "kernel": uname.release,
        "arch": uname.machine,
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "python": platform.python_version(),
        "root": os.geteuid() == 0,
        **disk,
    }


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    proc = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain"], capture_output=True, text=True)
    return proc.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def tool_info() -> dict[str, object]:
    try:
        version = metadata.version("layerbench")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"name": "layerbench", "version": version, "git_commit": _git_commit()}
