"""Images from outside: an OCI image layout, a `docker save` archive, or a host directory.

Each is read through harness/oci.py and harness/layer_tar.py, which apply layers
with OCI semantics and refuse anything that would write outside the layer root.
Absolute symlinks, common in distribution images (/etc/localtime), are rewritten
into the equivalent relative links inside the root.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from .driver import LayerFormat
from .errors import UserError
from .layer_tar import open_layer_stream
from .oci import LayerBlob, apply_blob, apply_host_dir, read_image

__all__ = ["ArchiveImage", "HostDirImage", "open_image"]

_WH = ".wh."
_OPAQUE = ".wh..wh..opq"


@dataclass
class ArchiveImage:
    """The layers of an OCI layout or a `docker save` archive, applied as they are."""

    blobs: list[LayerBlob]
    _files: dict[str, int] = field(default_factory=dict)
    _scanned: bool = False

    def _scan(self) -> None:
        """Flatten the layers' tar headers once: sizes and paths of the final image."""
        if self._scanned:
            return
        files: dict[str, int] = {}
        for blob in self.blobs:
            with blob.open() as raw, tarfile.open(fileobj=open_layer_stream(raw), mode="r|") as tar:
                for member in tar:
                    name = os.path.normpath(member.name).lstrip("/")
                    head, base = os.path.split(name)
                    if base == _OPAQUE:
                        files = {p: s for p, s in files.items() if not p.startswith(head + "/")}
                    elif base.startswith(_WH):
                        gone = os.path.join(head, base[len(_WH):])
                        files = {p: s for p, s in files.items() if p != gone and not p.startswith(gone + "/")}
                    elif member.isfile():
                        files[name] = member.size
        self._files, self._scanned = files, True

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

    def apply(self, index: int, root: Path, layer_format: LayerFormat) -> None:
        apply_blob(root, self.blobs[index], layer_format, symlinks="relative")


@dataclass
class HostDirImage:
    """A directory on the host as a one-layer image."""

    path: Path

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

    def apply(self, index: int, root: Path, layer_format: LayerFormat) -> None:
        apply_host_dir(root, self.path, layer_format, symlinks="relative")


def open_image(source: str, path: Path) -> ArchiveImage | HostDirImage:
    """The image of a scenario's `[image]` with `source` = dir, oci or docker-archive."""
    if source == "dir":
        if not path.is_dir():
            raise UserError(f"{path}: image source 'dir' needs a directory")
        return HostDirImage(path)
    return ArchiveImage(read_image(path))
