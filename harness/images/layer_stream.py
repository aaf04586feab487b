"""Reading a layer's tar stream: plain, gzip or zstd (told apart by magic), bounded as it goes.

The uncompressed bytes stop at a `SizeLimit` (by default the free disk of the layer's
filesystem less a margin), header blocks at 16 MiB; each refusal is one `UserError`
naming the layer, raised as soon as it shows, before more is decompressed.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from layerbench.errors import UserError
from layerbench.units import bytes_text

__all__ = [
    "SizeLimit",
    "free_disk_limit",
    "tighter",
    "open_layer_stream",
    "read_layer",
    "LayerTar",
    "name_of",
    "CHUNK",
    "BoundedTarInfo",
    "HeaderTooLarge",
    "zstd_errors",
]

_GZIP, _ZSTD = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"
CHUNK = 1 << 20  # bytes read or written at a time
_MAX_HEADER = 16 << 20  # a PAX or GNU long-name header block held in memory
_HEADER_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)


@dataclass(frozen=True)
class SizeLimit:
    """At most `total` uncompressed bytes for a whole image; the layers below this one took `below`.

    `why` says where the figure comes from, for the message (e.g. "--max-image-bytes").
    """

    total: int
    why: str
    below: int = 0

    @property
    def left(self) -> int:
        return max(0, self.total - self.below)

    def error(self, source: str, what: str = "uncompressed") -> UserError:
        after = f" after {bytes_text(self.below)} in the layers below" if self.below else ""
        return UserError(
            f"{source}: over the image size limit of {bytes_text(self.total)} ({self.why}): "
            f"more than {bytes_text(self.left)} {what} in this layer{after}"
        )


def free_disk_limit(path: Path | str | int, where: str = "") -> SizeLimit:
    """What the free disk of `path`'s filesystem allows, less a margin (a tenth, at most 1 GiB)."""
    sv = os.statvfs(path)
    free = sv.f_bavail * sv.f_frsize
    return SizeLimit(free - min(free // 10, 1 << 30), f"the free disk of {where or path} less a margin")


def tighter(a: SizeLimit | None, b: SizeLimit) -> SizeLimit:
    """The limit with less left."""
    return b if a is None or b.left < a.left else a


class HeaderTooLarge(Exception):
    """A tar header block over 16 MiB (`BoundedTarInfo`); its message says how large."""


class BoundedTarInfo(tarfile.TarInfo):
    """Refuses a PAX or GNU long-name header block larger than 16 MiB (tarfile reads it whole)."""

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _HEADER_TYPES and self.size > _MAX_HEADER:
            raise HeaderTooLarge(f"a tar header block of {bytes_text(self.size)} (at most {bytes_text(_MAX_HEADER)})")
        return super()._proc_member(tar)  # type: ignore[misc]


class _Bounded(io.RawIOBase):
    """A decompressed stream that counts its bytes and raises the limit's error past `limit.left`."""

    def __init__(self, stream: BinaryIO, limit: SizeLimit | None, source: str) -> None:
        self.stream, self.limit, self.source, self.count = stream, limit, source, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        want = len(buf) if self.limit is None else min(len(buf), self.limit.left - self.count + 1)
        data = self.stream.read(want)
        self.count += len(data)
        if self.limit is not None and self.count > self.limit.left:
            raise self.limit.error(self.source)
        buf[: len(data)] = data
        return len(data)


class _Prefixed(io.RawIOBase):
    """A stream with bytes already read from it put back in front."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.head:
            n = min(len(buf), len(self.head))
            buf[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.rest.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def open_layer_stream(fileobj: BinaryIO, limit: SizeLimit | None = None, name: str = "layer") -> BinaryIO:
    """Return `fileobj` decompressed as its magic says: gzip, zstd, or as it is.

    With `limit`, reading more than `limit.left` decompressed bytes raises its `UserError`
    (naming `name`) at once, before more is decompressed.
    """
    return io.BufferedReader(_Bounded(_decompressed(fileobj), limit, name), CHUNK)


def _decompressed(fileobj: BinaryIO) -> BinaryIO:
    head = b""
    while len(head) < 4:
        more = fileobj.read(4 - len(head))
        if not more:
            break
        head += more
    stream = io.BufferedReader(_Prefixed(head, fileobj), CHUNK)
    if head.startswith(_GZIP):
        return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    if head == _ZSTD:
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
    return stream


def name_of(fileobj: object) -> str:
    """A file object's base name, for messages (\"layer\" when it has none)."""
    name = getattr(fileobj, "name", None)
    return os.path.basename(name) if isinstance(name, str) else "layer"


@dataclass
class LayerTar:
    """A layer tar stream open for one pass in order; see `read_layer`."""

    tar: tarfile.TarFile
    stream: BinaryIO
    counter: _Bounded

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        while (info := self.tar.next()) is not None:
            self.tar.members.clear()  # type: ignore[attr-defined]  # a stream is read once: keep no list of every entry
            yield info

    def size(self) -> int:
        """Read to the end; the uncompressed bytes of the whole stream."""
        while self.stream.read(CHUNK):
            pass
        return self.counter.count


@contextmanager
def read_layer(fileobj: BinaryIO, source: str, limit: SizeLimit | None = None) -> Iterator[LayerTar]:
    """The layer tar stream in `fileobj` (plain, gzip or zstd), for one pass in order.

    Reading past `limit`, a header block over 16 MiB, a corrupt stream: one `UserError`
    naming `source`, raised as soon as it shows.
    """
    try:
        stream = open_layer_stream(fileobj, limit, source)
        with tarfile.open(fileobj=stream, mode="r|", errors="surrogateescape", tarinfo=BoundedTarInfo) as tar:
            yield LayerTar(tar, stream, stream.raw)  # type: ignore[attr-defined]
    except HeaderTooLarge as exc:
        raise UserError(f"{source}: {exc}") from None
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise UserError(f"{source}: not a readable layer tar: {exc}") from None
    except zstd_errors() as exc:
        raise UserError(f"{source}: not a readable zstd stream: {exc}") from None


def zstd_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a corrupt zstd stream raises (none without the zstandard module)."""
    try:
        import zstandard
    except ImportError:
        return ()
    return (zstandard.ZstdError,)
