"""Detaching a loop device: the one place `losetup -d` runs, and its failure is never ignored."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["detach"]


def detach(device: str) -> bool:
    """Detach the loop device; whether it is detached (or set to detach when its last user closes it).
    `losetup -d` killed by a signal meant for the run (a fleet worker stopped with its process group)
    detaches nothing: it is tried again, and a device still attached is reported, never forgotten."""
    name = os.path.basename(device)
    for _ in range(3):
        if subprocess.run(["losetup", "-d", device], capture_output=True).returncode == 0:
            return True
        try:
            if Path(f"/sys/block/{name}/loop/autoclear").read_text().strip() == "1":
                return True
        except FileNotFoundError:  # detached after all
            return True
    return False
