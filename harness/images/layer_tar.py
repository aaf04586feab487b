"""Apply one image layer's tar stream (uncompressed, gzip or zstd, told apart by magic) with OCI semantics.

Each tar member becomes an `Entry` (its numbers checked: ids, times, device numbers a
file can have) applied by `Applier` (images/layer_apply.py: confined below the layer
root, whiteouts, opaque directories, limits). Reading the stream (decompression, the
size limit, 16 MiB header blocks, the diff_id hashed as it streams) is
images/layer_stream.py; a host directory as a layer, images/layer_dir.py; the lower
layers of a DIFF import, images/lower_tree.py. The names below are this package's
layer-import API, imported from here by callers and plugins.
"""

from __future__ import annotations

import errno
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, BinaryIO

from layerbench.driver import LayerFormat
from layerbench.errors import UserError
from layerbench.images.layer_apply import NAME_MAX, PATH_MAX, Applier, Entry, LayerStats, SymlinkPolicy
from layerbench.images.layer_dir import apply_host_dir
from layerbench.images.layer_encoding import OPAQUE_XATTR
from layerbench.images.layer_stream import CHUNK, SizeLimit, name_of, read_layer
from layerbench.images.lower_tree import LowerTree

__all__ = ["LayerStats", "LowerTree", "SymlinkPolicy", "apply_tar_layer", "apply_host_dir", "NAME_MAX", "PATH_MAX"]


_KINDS = {
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}


#: what an entry's numbers may be: ids below the (uid_t)-1 "no change" value, times a 64-bit
#: nanosecond count holds, device numbers the kernel's dev_t has room for (12-bit major, 20-bit minor)
_MAX_ID, _MAX_MTIME_S, _MAX_MAJOR, _MAX_MINOR = (
    (1 << 32) - 2,
    (1 << 63) // 1_000_000_000 - 1,
    (1 << 12) - 1,
    (1 << 20) - 1,
)


def _numbers_error(info: tarfile.TarInfo, kind: str) -> str | None:
    """Why an entry's owner, time or device numbers cannot be applied, or None."""
    for what, value in (("uid", info.uid), ("gid", info.gid)):
        if not isinstance(value, int) or not 0 <= value <= _MAX_ID:
            return f"{what} {value!r} is not a user or group id (0 to {_MAX_ID})"
    mtime = info.mtime
    if not isinstance(mtime, (int, float)) or mtime != mtime or not -_MAX_MTIME_S <= mtime <= _MAX_MTIME_S:
        return f"mtime {mtime!r} is not a time a file can have"
    if kind in ("char", "block") and not (0 <= info.devmajor <= _MAX_MAJOR and 0 <= info.devminor <= _MAX_MINOR):
        fits = f"major <= {_MAX_MAJOR}, minor <= {_MAX_MINOR}"
        return f"device number {info.devmajor}:{info.devminor} does not fit a dev_t ({fits})"
    return None


def _entry(info: tarfile.TarInfo) -> Entry | str:
    kind = "file" if info.isreg() else _KINDS.get(info.type)
    if kind is None:
        return f"unsupported tar entry type {info.type!r}"
    if (why := _numbers_error(info, kind)) is not None:
        return why
    xattrs = {
        key[len("SCHILY.xattr.") :]: value.encode("utf-8", "surrogateescape")
        for key, value in info.pax_headers.items()
        if key.startswith("SCHILY.xattr.")
    }
    return Entry(
        name=info.name,
        kind=kind,
        mode=info.mode,
        uid=info.uid,
        gid=info.gid,
        mtime_ns=int(info.mtime * 1_000_000_000),
        linkname=info.linkname,
        major=info.devmajor,
        minor=info.devminor,
        size=info.size,
        xattrs=xattrs,
    )


def _copier(src: IO[bytes], size: int, applier: Applier, e: Entry) -> Callable[[int], int]:
    def write(fd: int) -> int:
        done = 0
        while True:
            chunk = src.read(CHUNK)
            if not chunk:
                break
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
            done += len(chunk)
        if done != size:
            applier.fail(e, f"truncated: {done} of {size} bytes")
        return done

    return write


def apply_tar_layer(
    root: Path,
    fileobj: BinaryIO,
    layer_format: LayerFormat,
    *,
    name: str | None = None,
    symlinks: SymlinkPolicy = "refuse",
    limit: SizeLimit | None = None,
    lower: LowerTree | None = None,
    opaque_xattr: str = OPAQUE_XATTR,
    diff_id: str | None = None,
) -> LayerStats:
    """Apply one layer tar stream (plain, gzip or zstd) onto `root` with OCI semantics.

    `name` labels errors (default: the file object's name). Raises `UserError` for an
    unsafe or malformed entry; nothing outside `root` is touched. `symlinks="relative"`
    rewrites absolute symlink targets to relative ones inside the root instead of
    refusing them. The uncompressed stream and the bytes written stop at `limit` and at
    the free disk of the root's filesystem. On DIFF, `lower` (one `LowerTree` for all
    the layers of an image, bottom first) makes the refusals those of FULL and takes in
    this layer; `opaque_xattr` is the driver's (`Driver.opaque_xattr`). With `diff_id`, the
    uncompressed stream is hashed while it is applied and a mismatch is a `UserError` at its end
    (what was applied stays: the caller removes the layer, as after any error).
    """
    source = name or name_of(fileobj)
    applier = Applier(root, layer_format, source, symlinks, limit=limit, lower=lower, opaque_xattr=opaque_xattr)
    try:
        with read_layer(fileobj, source, applier.limit, diff_id) as layer:
            for info in layer:
                e = _entry(info)
                if isinstance(e, str):
                    raise UserError(f"{source}: entry {info.name!r}: {e}")
                reader = layer.tar.extractfile(info) if e.kind == "file" else None
                applier.apply(e, None if reader is None else _copier(reader, info.size, applier, e))
        applier.finish()
        if applier.lower is not None:
            applier.lower.fold(applier.root_fd, opaque_xattr)
        return applier.stats
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise UserError(f"{source}: entry {applier.current!r}: no space left on the layer's filesystem") from None
    finally:
        applier.close()
