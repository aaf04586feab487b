"""mountinfo, read in one place: escapes decoded, points below a root, per-mount options."""

from __future__ import annotations

import os
import subprocess
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
