"""Checks more than one test module makes: `snapshot` (a tree, entry by entry, to compare before and
after) and `golden` (a text against its golden file under tests/data/golden; LAYERBENCH_UPDATE_GOLDEN=1
rewrites them). Not a test module: test modules import these from here, never from each other."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).parent / "data" / "golden"
UPDATE = os.environ.get("LAYERBENCH_UPDATE_GOLDEN") == "1"  # regenerate the golden files


def snapshot(top: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under `top`: kind and mode, owner, size, mtime, content digest or link target."""
    out: dict[str, tuple[Any, ...]] = {".": (os.lstat(top).st_mode, os.lstat(top).st_mtime_ns)}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            body: Any = None
            if os.path.islink(p):
                body = os.readlink(p)
            elif os.path.isfile(p):
                body = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            out[os.path.relpath(p, top)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, body)
    return out


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text()
