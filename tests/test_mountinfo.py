"""mountinfo, read in one place: escapes decoded, points below a root, per-mount options."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from layerbench.kernel import mountinfo, syscalls

from .conftest import ROOT


def test_the_root_filesystem_is_a_mount_and_every_line_parses() -> None:
    found = mountinfo.mounts()
    assert any(m.point == "/" for m in found)
    assert all(m.fstype and m.options for m in found)


@pytest.mark.mounts
@pytest.mark.skipif(not ROOT, reason="mounting a tmpfs needs root")
def test_a_point_with_a_space_is_decoded_and_found_below_its_root(tmp_path: Path) -> None:
    point = tmp_path / "a dir\twith escapes"
    point.mkdir()
    syscalls.mount("tmpfs", str(point), "tmpfs", 0, "size=1m")
    try:
        (mount,) = [m for m in mountinfo.mounts() if m.point == str(point)]
        assert mount.fstype == "tmpfs" and mount.has("nodev", "nosuid")  # layerbench mounts are always both
        assert mountinfo.points_below(str(tmp_path)) == [str(point)]
        assert mountinfo.points_below(str(point), include_root=False) == []
        assert str(point) not in mountinfo.points_below(str(tmp_path) + "x")  # a sibling prefix is not below
    finally:
        syscalls.umount(str(point))
    assert mountinfo.points_below(str(tmp_path)) == []
    assert subprocess.run(["findmnt", str(point)], capture_output=True).returncode != 0
    os.rmdir(point)


@pytest.mark.mounts
@pytest.mark.skipif(not ROOT, reason="a mount namespace and a tmpfs need root")
def test_points_below_reads_another_process_namespace_by_pid(tmp_path: Path) -> None:
    point = tmp_path / "theirs"
    point.mkdir()
    ready = tmp_path / "ready"
    script = f"mount -t tmpfs -o size=1m tmpfs '{point}' && touch '{ready}' && exec sleep 30"
    child = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script])
    try:
        for _ in range(500):
            if ready.exists() or child.poll() is not None:
                break
            time.sleep(0.01)
        assert ready.exists(), "the child never mounted its tmpfs"
        assert mountinfo.points_below(str(tmp_path), pid=child.pid) == [str(point)]
        assert str(point) in mountinfo.mount_points(child.pid)
        assert mountinfo.points_below(str(tmp_path)) == []  # not in ours: a private namespace
    finally:
        child.kill()
        child.wait()
