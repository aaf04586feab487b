"""The built-in launcher's control pipe: both of its processes write lines to it, and one read may get both."""

from __future__ import annotations

import os
from pathlib import Path

from layerbench.run.launcher import BuiltinContainer


def test_two_lines_in_one_read_are_two_replies(tmp_path: Path) -> None:
    box = BuiltinContainer("c0", tmp_path, ("/bin/true",), (), "/", tmp_path)
    try:
        os.write(box._ctl_w, b"pid 4242\nprepared\n")  # the outer child's line and pid 1's, read at once
        os.close(box._ctl_w)
        assert [box._read_ctl(), box._read_ctl(), box._read_ctl()] == ["pid 4242", "prepared", ""]
    finally:
        for fd in (box._out_r, box._out_w, box._ctl_r, box._go_r, box._go_w):
            os.close(fd)
