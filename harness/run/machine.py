"""Facts about this machine and the tool, for the results file."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["machine_info", "tool_info", "machine_name"]


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


def machine_info() -> dict[str, object]:
    uname = platform.uname()
    return {
        "name": machine_name(),
        "kernel": uname.release,
        "arch": uname.machine,
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "python": platform.python_version(),
        "root": os.geteuid() == 0,
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
