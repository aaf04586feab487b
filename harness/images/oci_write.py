"""Writing OCI image layouts: a synthetic image (`write_layout`) or layer tars with a config
(`write_layout_from_tars`), each layer compressed with gzip or zstd. Reading one is images/oci.py."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path
from typing import IO, Any, cast

from layerbench.images.config import ImageConfig
from layerbench.images.image import SyntheticImage
from layerbench.images.oci import host_platform

__all__ = ["COMPRESSIONS", "write_layout", "write_layout_from_tars"]

#: layer compression `write_layout` knows -> the layer media type it writes
COMPRESSIONS = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}


def _layer_tar(image: SyntheticImage, index: int, contents: dict[str, bytes]) -> bytes:
    """Layer `index` as a deterministic tar: parent directories, whiteouts, files, sorted; owner 0, mtime 0."""
    layer = image.layers[index]
    entries: dict[str, tarfile.TarInfo] = {}
    data: dict[str, bytes] = {}

    def parents(path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            entries.setdefault(d + "/", tarfile.TarInfo(d + "/"))
            entries[d + "/"].type, entries[d + "/"].mode = tarfile.DIRTYPE, 0o755

    for gone in layer.removals:
        parents(gone)
        head, _, tail = gone.rpartition("/")
        wh = f"{head}/.wh.{tail}" if head else f".wh.{tail}"
        entries[wh] = tarfile.TarInfo(wh)
        data[wh] = b""
    for spec in layer.files:
        parents(spec.path)
        info = tarfile.TarInfo(spec.path)
        info.mode, info.size = spec.mode, spec.size
        entries[spec.path], data[spec.path] = info, contents[str(spec.seed)]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            info = entries[name]
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            tar.addfile(info, io.BytesIO(data[name]) if name in data else None)
    return out.getvalue()


def _compress(raw: bytes, compression: str) -> bytes:
    if compression == "gzip":
        out = io.BytesIO()
        with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as gz:
            gz.write(raw)
        return out.getvalue()
    import zstandard  # imported here: only layouts with zstd layers need it

    return zstandard.ZstdCompressor(level=3).compress(raw)


def write_layout(image: SyntheticImage, dest: Path, compression: str) -> None:
    """Write `image` as an OCI image layout at `dest` (a new directory), each layer compressed with
    `compression` ("gzip" or "zstd"). The same image gives the same bytes and digests every time."""
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}"

    contents = image.contents()
    layers, diff_ids = [], []
    for i in range(image.layer_count):
        raw = _layer_tar(image, i, contents)
        diff_ids.append(f"sha256:{hashlib.sha256(raw).hexdigest()}")
        packed = _compress(raw, compression)
        layers.append({"mediaType": COMPRESSIONS[compression], "digest": put(packed), "size": len(packed)})
    os_name, arch = host_platform()
    config = json.dumps(
        {"architecture": arch, "os": os_name, "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {}},
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": put(config),
                "size": len(config),
            },
            "layers": layers,
        },
        sort_keys=True,
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest), "size": len(manifest)}
        ],
    }
    (dest / "index.json").write_text(json.dumps(index, sort_keys=True))
    (dest / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))


def _compress_file(src: Path, blobs: Path, compression: str) -> tuple[str, str, int]:
    """Compress the tar at `src` into `blobs`, streaming; (its diff_id, the blob's digest, the blob's size)."""
    raw_hash, packed_hash = hashlib.sha256(), hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=".blob-", dir=blobs)
    with os.fdopen(fd, "wb") as out:

        class _Hashing(io.RawIOBase):
            def writable(self) -> bool:
                return True

            def write(self, data: Any) -> int:
                packed_hash.update(data)
                out.write(data)
                return len(data)

        sink = _Hashing()
        if compression == "gzip":
            writer: Any = gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=6, mtime=0)
        else:
            import zstandard  # imported here: only layouts with zstd layers need it

            writer = zstandard.ZstdCompressor(level=3).stream_writer(cast(IO[bytes], sink), closefd=False)
        with open(src, "rb") as f, writer:
            while chunk := f.read(1 << 20):
                raw_hash.update(chunk)
                writer.write(chunk)
        size = out.tell()
    digest = packed_hash.hexdigest()
    os.chmod(tmp, 0o644)
    os.rename(tmp, blobs / digest)
    return f"sha256:{raw_hash.hexdigest()}", f"sha256:{digest}", size


def write_layout_from_tars(
    dest: Path,
    tars: list[Path],
    compression: str,
    config: ImageConfig,
    *,
    created: str = "2023-11-14T22:13:20Z",
    annotations: dict[str, str] | None = None,
) -> None:
    """An OCI image layout at `dest` (a new directory) of the layer tars `tars` (bottom first), each
    compressed with `compression`, its config carrying `config` (Entrypoint, Env, the ready label)."""
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}"

    layers, diff_ids = [], []
    for tar in tars:
        diff_id, digest, size = _compress_file(tar, blobs, compression)
        diff_ids.append(diff_id)
        layers.append({"mediaType": COMPRESSIONS[compression], "digest": digest, "size": size})
    os_name, arch = host_platform()
    blob = json.dumps(
        {
            "architecture": arch,
            "os": os_name,
            "created": created,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": config.to_oci(),
            "history": [{"created": created, "created_by": "layerbench"} for _ in tars],
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(blob), "size": len(blob)},
            "layers": layers,
        },
        sort_keys=True,
    ).encode()
    desc: dict[str, Any] = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": put(manifest),
        "size": len(manifest),
    }
    if annotations:
        desc["annotations"] = annotations
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [desc]}
    (dest / "index.json").write_text(json.dumps(index, sort_keys=True))
    (dest / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
