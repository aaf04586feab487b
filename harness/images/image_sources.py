"""Images from outside: an OCI image layout, a `docker save` archive, or a host directory.

Each is read through harness/images/oci.py and harness/images/layer_tar.py, which apply layers
with OCI semantics and refuse anything that would write outside the layer root.
Absolute symlinks, common in distribution images (/etc/localtime), are rewritten
into the equivalent relative links inside the root.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from layerbench import environment
from layerbench.driver import LayerFormat
from layerbench.errors import UserError
from layerbench.images.config import ImageConfig
from layerbench.images.layer_apply import SKIPPED_LISTED
from layerbench.images.layer_encoding import OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX
from layerbench.images.layer_stream import LayerTar, SizeLimit, free_disk_limit, read_layer
from layerbench.images.layer_tar import LowerTree
from layerbench.images.oci import LayerBlob, apply_blob, apply_host_dir, read_config, read_image, source_kind

__all__ = ["ArchiveImage", "HostDirImage", "open_image", "parse_size", "MAX_ENTRIES"]

#: entries an imported image may hold (its file list is kept in memory)
MAX_ENTRIES = 4_000_000
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)$", re.IGNORECASE)


def parse_size(text: str, what: str = "--max-image-bytes") -> int:
    """`10G`, `500M`, `1.5GiB`, `4096` -> bytes (binary multiples)."""
    m = _SIZE.match(text.strip())
    if m is None or float(m.group(1)) <= 0:
        raise UserError(f"{what} {text!r}: expected a size such as 500M, 10G or 1073741824 (bytes)")
    return int(float(m.group(1)) * (1 << (10 * " KMGT".index(m.group(2).upper() or " "))))


def _image_limit() -> SizeLimit | None:
    """The bound of the run's environment (harness/environment.py): `--max-image-bytes`
    uncompressed, or else the free disk under its work root; none outside a run."""
    env = environment.current()
    if env.max_image_bytes is not None:
        return SizeLimit(env.max_image_bytes, "--max-image-bytes")
    if env.work_root is None:
        return None
    where = Path(env.work_root)
    while not where.exists():  # a run's work root, removed since
        where = where.parent
    return free_disk_limit(where, f"the work root {where}")


_Tree = dict[str, Any]  # name -> a subtree (directory), a size (regular file) or -1 (anything else)


def _scan_layer(tree: _Tree, layer: LayerTar, seen: int, name: str, limit: SizeLimit | None) -> tuple[int, int]:
    """Fold one layer's headers into `tree` (whiteouts hide lower layers only); return the entries seen
    and the bytes the layer's files declare. Those are what applying it writes, more than the stream
    holds for a sparse member: past `limit`, the limit's error ("written"), as the applier would give."""
    hide: list[tuple[tuple[str, ...], str | None]] = []  # (directory, name or None for an opaque marker)
    put: list[tuple[tuple[str, ...], int | None]] = []  # (path, size, -1 or None for a directory)
    written = 0
    for member in layer:
        seen += 1
        if seen > MAX_ENTRIES:
            raise UserError(f"{name}: the image has more than {MAX_ENTRIES} entries")
        if member.isfile():
            written += member.size
            if limit is not None and written > limit.left:
                raise limit.error(name, "written")
        parts = tuple(p for p in member.name.split("/") if p not in ("", "."))
        if not parts:
            continue
        base = parts[-1]
        if base.startswith(WHITEOUT_PREFIX):
            hide.append((parts[:-1], None if base == OPAQUE_MARKER else base[len(WHITEOUT_PREFIX) :]))
        else:
            put.append((parts, None if member.isdir() else member.size if member.isfile() else -1))
    for dparts, gone in hide:
        node = _node(tree, dparts)
        if node is None:
            continue
        if gone is None:
            node.clear()
        else:
            node.pop(gone, None)
    for parts, value in put:
        node = tree
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        if value is None:
            if not isinstance(node.get(parts[-1]), dict):
                node[parts[-1]] = {}
        else:
            node[parts[-1]] = value
    return seen, written


def _node(tree: _Tree, parts: tuple[str, ...]) -> _Tree | None:
    node: Any = tree
    for p in parts:
        node = node.get(p) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def _files(tree: _Tree) -> dict[str, int]:
    out: dict[str, int] = {}
    todo: list[tuple[str, _Tree]] = [("", tree)]
    while todo:
        prefix, node = todo.pop()
        for name, value in node.items():
            if isinstance(value, dict):
                todo.append((f"{prefix}{name}/", value))
            elif value >= 0:
                out[f"{prefix}{name}"] = value
    return out


#: scans of images by their layers' digests (the 16 latest): a run opens an image once per cell
_SCANS: dict[tuple[Any, ...], tuple[dict[str, int], list[int]]] = {}


@dataclass
class ArchiveImage:
    """The layers of an OCI layout or a `docker save` archive, applied as they are.

    `limit` bounds the uncompressed size of the whole image (every pass over the
    layers stops as soon as it is passed); DIFF layers are checked against a
    `LowerTree` of the layers below, so they are refused as FULL ones are.
    """

    blobs: list[LayerBlob]
    limit: SizeLimit | None = None
    config: ImageConfig | None = None  # what a runtime starts, and when it is ready (harness/images/config.py)
    layout: Path | None = None  # the OCI layout the image was read from, when it was one (a registry pushes it)
    #: what its last build's layers did not apply and why (`LayerStats.skipped`; layer 0 starts it anew)
    skipped: list[str] = field(default_factory=list, init=False)
    _files: dict[str, int] = field(default_factory=dict)
    _sizes: list[int] = field(default_factory=list)  # each layer's uncompressed bytes or, if more, bytes written
    _scanned: bool = False
    _lower: LowerTree | None = None
    _next: int = 0

    def _scan(self) -> None:
        """Read the layers' tar headers once: the final image's files and sizes, each layer's size; each
        layer's uncompressed bytes checked against its diff_id in the same pass (before any store is made).

        An image whose every layer has a digest (verified when it was opened) is scanned once per
        process: every cell that opens the same image shares the result while it is within the limit
        (a scan that passed a limit passes any limit as large; a smaller one scans again, and refuses)."""
        if self._scanned:
            return
        # a scan is shared only by layers whose stored bytes were checked (their digest), and by the same
        # diff_ids: the scan checks the uncompressed bytes against them
        ids = tuple((b.digest, b.diff_id) for b in self.blobs)
        key = ids if all(d for d, _ in ids) else None
        if key is not None and key in _SCANS:
            files, sizes = _SCANS[key]
            if self.limit is None or sum(sizes) <= self.limit.total:
                self._files, self._sizes, self._scanned = dict(files), list(sizes), True
                return
        tree: _Tree = {}
        seen = 0
        for blob in self.blobs:
            limit = None if self.limit is None else replace(self.limit, below=sum(self._sizes))
            with blob.open() as raw, read_layer(raw, blob.name, limit, blob.diff_id) as layer:
                seen, written = _scan_layer(tree, layer, seen, blob.name, limit)
                self._sizes.append(max(layer.size(), written))  # the most the layer reads or writes
        self._files, self._scanned = _files(tree), True
        if key is not None:
            if len(_SCANS) >= 16:
                _SCANS.pop(next(iter(_SCANS)))
            _SCANS[key] = (dict(self._files), list(self._sizes))

    @property
    def layer_count(self) -> int:
        return len(self.blobs)

    @property
    def total_bytes(self) -> int:
        self._scan()
        return sum(self._files.values())

    @property
    def total_files(self) -> int:
        self._scan()
        return len(self._files)

    def file_paths(self) -> list[str]:
        self._scan()
        return sorted(self._files)

    def apply(self, index: int, root: Path, layer_format: LayerFormat, *, opaque_xattr: str = OPAQUE_XATTR) -> None:
        self._scan()
        lower = None
        if layer_format is LayerFormat.DIFF:  # the layers below, as FULL would see them in its root
            if index == 0:
                self._lower = LowerTree()
            elif index != self._next or self._lower is None:
                raise ValueError(f"DIFF layer {index} applied after layer {self._next - 1}: apply them bottom first")
            lower = self._lower
        limit = None if self.limit is None else replace(self.limit, below=sum(self._sizes[:index]))
        stats = apply_blob(
            root,
            self.blobs[index],
            layer_format,
            symlinks="relative",
            limit=limit,
            lower=lower,
            opaque_xattr=opaque_xattr,
        )
        self.skipped = [*(self.skipped if index else ()), *stats.skipped][:SKIPPED_LISTED]
        self._next = index + 1


@dataclass
class HostDirImage:
    """A directory on the host as a one-layer image."""

    path: Path
    skipped: list[str] = field(default_factory=list, init=False)  # what its last build did not apply (`LayerStats`)

    @property
    def layer_count(self) -> int:
        return 1

    def _walk(self) -> list[tuple[str, int]]:
        out = []
        for top, _, names in os.walk(self.path):
            for name in names:
                full = os.path.join(top, name)
                st = os.lstat(full)
                if os.path.isfile(full) and not os.path.islink(full):
                    out.append((os.path.relpath(full, self.path), st.st_size))
        return out

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self._walk())

    @property
    def total_files(self) -> int:
        return len(self._walk())

    def file_paths(self) -> list[str]:
        return sorted(p for p, _ in self._walk())

    def apply(self, index: int, root: Path, layer_format: LayerFormat, *, opaque_xattr: str = OPAQUE_XATTR) -> None:
        self.skipped = apply_host_dir(root, self.path, layer_format, symlinks="relative", limit=_image_limit()).skipped


def open_image(source: str, path: Path) -> ArchiveImage | HostDirImage:
    """The image of a scenario's `[image]` with `source` = dir, oci or docker-archive.

    `path` must be a directory or a regular file, checked with stat(2) before anything
    opens it: a fifo would block the first open forever, before any cell's time limit."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise UserError(f"{path}: cannot open the image: {exc.strerror}") from None
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        raise UserError(f"{path}: image source {source!r} needs a directory or a regular file")
    if source == "dir":
        if not path.is_dir():
            raise UserError(f"{path}: image source 'dir' needs a directory")
        return HostDirImage(path)
    limit = _image_limit()
    layout = path if path.is_dir() and source_kind(path) == "oci-layout" else None
    return ArchiveImage(read_image(path, limit=limit), limit, read_config(path), layout)
