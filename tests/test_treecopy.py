from __future__ import annotations

import os
import stat
from pathlib import Path

from layerbench.kernel.treecopy import copy_tree


def test_full_copy_keeps_metadata_and_shares_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "dir").mkdir(parents=True)
    os.chmod(src / "dir", 0o1705)
    (src / "dir" / "f").write_bytes(b"hello" * 1000)
    os.chmod(src / "dir" / "f", 0o4755)
    os.link(src / "dir" / "f", src / "hard")
    os.symlink("dir/f", src / "link")
    if os.geteuid() == 0:
        os.chown(src / "dir", 1, 2)
        os.mknod(src / "wh", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    dst = tmp_path / "dst"
    copy_tree(str(src), str(dst))

    f, g = (dst / "dir" / "f").stat(), (src / "dir" / "f").stat()
    assert (dst / "dir" / "f").read_bytes() == b"hello" * 1000
    assert stat.S_IMODE(f.st_mode) == 0o4755 and f.st_mtime_ns == g.st_mtime_ns
    assert f.st_ino != g.st_ino  # a copy, not a link to the source
    assert (dst / "hard").stat().st_ino == f.st_ino  # hardlinks inside the tree kept
    assert os.readlink(dst / "link") == "dir/f"
    d = (dst / "dir").stat()
    assert stat.S_IMODE(d.st_mode) == 0o1705
    if os.geteuid() == 0:
        assert (d.st_uid, d.st_gid) == (1, 2)
        wh = (dst / "wh").lstat()
        assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
