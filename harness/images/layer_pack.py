"""A DIFF layer directory written as an OCI layer tar: what an engine's content store and applier take.

The directory is in overlay encoding (layer_encoding.py): a 0/0 character device is
written as `.wh.<name>`, a directory carrying the opaque xattr as the directory and its
`.wh..wh..opq`. Other extended attributes go in PAX `SCHILY.xattr.*` records (the
overlay's own `trusted.overlay.*` never). Hard links inside the layer stay links;
symlinks are written as links, never followed. Entries are in sorted order, so the
same tree gives the same bytes and digest. The root comes first, as `./`.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from pathlib import Path
from typing import IO

from .layer_encoding import OPAQUE_MARKER, WHITEOUT_PREFIX, is_whiteout, mechanism_xattr

__all__ = ["pack_layer"]


class _Hashing:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.sha, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)


def _xattrs(path: str, opaque_xattr: str) -> tuple[dict[str, str], bool]:
    """The PAX records of `path`'s xattrs, and whether it is an opaque directory."""
    records: dict[str, str] = {}
    opaque = False
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return records, opaque
    for name in sorted(names):
        value = os.getxattr(path, name, follow_symlinks=False)
        if name == opaque_xattr:
            opaque = value == b"y"
        elif mechanism_xattr(name) is None:
            records[f"SCHILY.xattr.{name}"] = value.decode("utf-8", "surrogateescape")
    return records, opaque


def pack_layer(src: Path, out: IO[bytes], opaque_xattr: str = "trusted.overlay.opaque") -> tuple[str, int]:
    """Write DIFF directory `src` as an uncompressed OCI layer tar to `out`; return (`sha256:` digest, size)."""
    sink = _Hashing(out)
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT, errors="surrogateescape") as tar:  # type: ignore[call-overload]
        root = tar.gettarinfo(str(src), "./")  # the root's own mode and owner (an engine's default may differ)
        root.uname = root.gname = ""
        tar.addfile(root)
        for top, dirs, files in os.walk(src):
            dirs.sort()
            rel_top = os.path.relpath(top, src)
            for name in sorted(dirs + files):
                path = os.path.join(top, name)
                arc = name if rel_top == "." else f"{rel_top}/{name}"
                st = os.lstat(path)
                if is_whiteout(st):
                    info = tarfile.TarInfo(f"{os.path.dirname(arc)}/{WHITEOUT_PREFIX}{name}".lstrip("/"))
                    info.mtime, info.mode = int(st.st_mtime), 0o644
                    tar.addfile(info)
                    continue
                info = tar.gettarinfo(path, arc)
                info.uname = info.gname = ""
                records, opaque = _xattrs(path, opaque_xattr)
                info.pax_headers = records
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
                if opaque and stat.S_ISDIR(st.st_mode):
                    marker = tarfile.TarInfo(f"{arc}/{OPAQUE_MARKER}")
                    marker.mtime, marker.mode = int(st.st_mtime), 0o644
                    tar.addfile(marker)
    return f"sha256:{sink.sha.hexdigest()}", sink.size
