"""Reading a layer's tar stream: plain, gzip or zstd (told apart by magic), bounded as it goes.

The uncompressed bytes stop at a `SizeLimit` (by default the free disk of the layer's
filesystem less a margin), header blocks at 16 MiB; each refusal is one `UserError`
naming the layer, raised as soon as it shows, before more is decompressed. Given the
layer's `diff_id` (the image config's digest of the uncompressed tar), the bytes are
hashed as they are decompressed, in the same pass, and checked at the stream's end.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
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
    "diff_id_hash",
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


_DIGEST = re.compile(r"^(sha256|sha512):([0-9a-f]{64}|[0-9a-f]{128})$")


def diff_id_hash(source: str, diff_id: str) -> tuple[hashlib._Hash, str]:
    """A new hash of `diff_id`'s algorithm and the hex digest it must reach; a malformed one is a `UserError`."""
    m = _DIGEST.match(diff_id)
    if m is None or len(m.group(2)) != {"sha256": 64, "sha512": 128}[m.group(1)]:
        raise UserError(f"{source}: unsupported or malformed diff_id {diff_id!r}")
    return hashlib.new(m.group(1)), m.group(2)


class _Bounded(io.RawIOBase):
    """A decompressed stream that counts (and, given a hash, hashes) its bytes and raises the
    limit's error past `limit.left`."""

    def __init__(self, stream: BinaryIO, limit: SizeLimit | None, source: str, hasher: hashlib._Hash | None) -> None:
        self.stream, self.limit, self.source, self.count, self.hasher = stream, limit, source, 0, hasher

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        want = len(buf) if self.limit is None else min(len(buf), self.limit.left - self.count + 1)
        data = self.stream.read(want)
        self.count += len(data)
        if self.limit is not None and self.count > self.limit.left:
            raise self.limit.error(self.source)
        if self.hasher is not None:
            self.hasher.update(data)
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


def open_layer_stream(
    fileobj: BinaryIO, limit: SizeLimit | None = None, name: str = "layer", hasher: hashlib._Hash | None = None
) -> BinaryIO:
    """Return `fileobj` decompressed as its magic says: gzip, zstd, or as it is.

    With `limit`, reading more than `limit.left` decompressed bytes raises its `UserError`
    (naming `name`) at once, before more is decompressed; `hasher` is fed every decompressed byte.
    """
    return io.BufferedReader(_Bounded(_decompressed(fileobj), limit, name, hasher), CHUNK)


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
def read_layer(
    fileobj: BinaryIO, source: str, limit: SizeLimit | None = None, diff_id: str | None = None
) -> Iterator[LayerTar]:
    """The layer tar stream in `fileobj` (plain, gzip or zstd), for one pass in order.

    Reading past `limit`, a header block over 16 MiB, a corrupt stream: one `UserError`
    naming `source`, raised as soon as it shows. With `diff_id`, the decompressed bytes are
    hashed as they are read; once the caller is done, the rest of the stream (the tar's end
    blocks) is read and a digest other than `diff_id` is a `UserError`.
    """
    hasher, want = diff_id_hash(source, diff_id) if diff_id is not None else (None, "")
    try:
        stream = open_layer_stream(fileobj, limit, source, hasher)
        with tarfile.open(fileobj=stream, mode="r|", errors="surrogateescape", tarinfo=BoundedTarInfo) as tar:
            yield LayerTar(tar, stream, stream.raw)  # type: ignore[attr-defined]
            if hasher is not None:
                while stream.read(CHUNK):
                    pass
                if hasher.hexdigest() != want:
                    raise UserError(f"{source}: uncompressed content does not match its diff_id {diff_id}")
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
