"""Image files built by hand for the tests: tar layers member by member (`F`, `D`, `S`, `H`, `DEV`,
`WH`, `tar_bytes`), OCI image layouts (`Layout`, `oci_layout`) and `docker save` archives
(`docker_archive`), and a layout whose config lies about its layer (`lying_layout`). Not a test
module: test modules import these from here, never from each other."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import tarfile
from pathlib import Path
from typing import Any

import pytest

from layerbench.driver import LayerFormat

ROOT = os.geteuid() == 0
FULL, DIFF = LayerFormat.FULL, LayerFormat.DIFF
needs_root = pytest.mark.skipif(not ROOT, reason="overlay whiteouts, trusted xattrs and chown need root")
MTIME = 1_600_000_000


# -- building archives ----------------------------------------------------------------------

Member = tuple[tarfile.TarInfo, bytes | None]


def tar_info(
    name: str,
    kind: bytes,
    mode: int,
    uid: int = 0,
    gid: int = 0,
    xattrs: dict[str, str] | None = None,
    mtime: int = MTIME,
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, mtime
    if xattrs:
        info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
    return info


def F(name: str, data: bytes = b"", mode: int = 0o644, **kw: object) -> Member:
    info = tar_info(name, tarfile.REGTYPE, mode, **kw)  # type: ignore[arg-type]
    info.size = len(data)
    return info, data


def D(name: str, mode: int = 0o755, **kw: object) -> Member:
    return tar_info(name, tarfile.DIRTYPE, mode, **kw), None  # type: ignore[arg-type]


def S(name: str, target: str) -> Member:
    info = tar_info(name, tarfile.SYMTYPE, 0o777)
    info.linkname = target
    return info, None


def H(name: str, target: str) -> Member:
    info = tar_info(name, tarfile.LNKTYPE, 0o644)
    info.linkname = target
    return info, None


def DEV(name: str, kind: bytes, major: int = 0, minor: int = 0, mode: int = 0o600) -> Member:
    info = tar_info(name, kind, mode)
    info.devmajor, info.devminor = major, minor
    return info, None


def WH(name: str) -> Member:
    return F(name)


def tar_bytes(*members: Member, compress: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buf.getvalue()
    if compress == "gzip":
        return gzip.compress(raw)
    if compress == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(raw)
    return raw


# -- image layouts and archives -------------------------------------------------------------

OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def layers() -> list[bytes]:
    """Three uncompressed layer tars: a base, a change set with whiteouts, an opaque dir."""
    return [
        tar_bytes(
            D("etc/"),
            F("etc/conf", b"v1"),
            D("bin/"),
            F("bin/sh", b"#!", 0o755),
            H("bin/sh2", "bin/sh"),
            D("d/"),
            F("d/old", b"o"),
            D("gone/"),
            F("gone/x", b"x"),
        ),
        tar_bytes(D("etc/"), WH("etc/.wh.conf"), F("etc/new", b"n"), WH(".wh.gone"), S("etc/sh", "../bin/sh")),
        tar_bytes(D("d/"), WH("d/.wh..wh..opq"), F("d/fresh", b"f")),
    ]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data, mtime=0)  # no timestamp: the same bytes, the same digest
    if how == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    return data


class Layout:
    """Files of an OCI image layout, to write as a directory or a tar."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}'}

    def blob(self, data: bytes) -> dict[str, Any]:
        self.files[f"blobs/sha256/{sha(data)[7:]}"] = data
        return {"digest": sha(data), "size": len(data)}

    def manifest(
        self, tars: list[bytes], how: tuple[str, ...] = ("", "gzip", "zstd"), rootfs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """An image of `tars`; its config's `rootfs` is `rootfs` when given (else the tars' true diff_ids)."""
        rootfs = {"type": "layers", "diff_ids": [sha(t) for t in tars]} if rootfs is None else rootfs
        config = self.blob(json.dumps({"rootfs": rootfs}).encode())
        descs = []
        for i, t in enumerate(tars):
            kind = how[i % len(how)]
            descs.append({"mediaType": OCI_TAR + (f"+{kind}" if kind else ""), **self.blob(_compress(t, kind))})
        doc = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
            "layers": descs,
        }
        return {"mediaType": doc["mediaType"], **self.blob(json.dumps(doc).encode())}

    def index(self, manifests: list[dict[str, Any]]) -> None:
        self.files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": manifests}).encode()

    def write_dir(self, path: Path) -> Path:
        for name, data in self.files.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(data)
        return path

    def write_tar(self, path: Path) -> Path:
        with tarfile.open(path, "w") as tar:
            for name, data in self.files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path


def oci_layout(path: Path, ref: str = "demo:1") -> Path:
    lay = Layout()
    m = lay.manifest(layers())
    lay.index([{**m, "annotations": {"org.opencontainers.image.ref.name": ref}}])
    return lay.write_dir(path)


def docker_archive(
    path: Path,
    images: dict[str, list[bytes]],
    dup_symlink: bool = False,
    blobs: bool = False,
    diff_ids: list[str] | None = None,
) -> Path:
    """A legacy `docker save` tar: manifest.json, <id>/layer.tar, <config>.json with diff_ids.

    `blobs`: each layer at blobs/sha256/<its digest>, as docker save writes since Docker 25;
    `diff_ids`: the config's, instead of the layers' true ones."""
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = []
    manifest = []
    for tag, tars in images.items():
        names: list[str] = []
        for i, t in enumerate(tars):
            lid = hashlib.sha256(tag.encode() + bytes([i])).hexdigest()
            info = tarfile.TarInfo(f"blobs/sha256/{sha(t)[7:]}" if blobs else f"{lid}/layer.tar")
            if dup_symlink and i > 0 and t == tars[0]:  # older docker links duplicate layers
                info.type, info.linkname = tarfile.SYMTYPE, f"../{names[0].split('/')[0]}/layer.tar"
                entries.append((info, None))
            else:
                info.size = len(t)
                entries.append((info, t))
            names.append(info.name)
        ids = [sha(t) for t in tars] if diff_ids is None else diff_ids
        config = json.dumps({"rootfs": {"type": "layers", "diff_ids": ids}}).encode()
        cinfo = tarfile.TarInfo(f"{sha(config)[7:]}.json")
        cinfo.size = len(config)
        entries.append((cinfo, config))
        manifest.append({"Config": cinfo.name, "RepoTags": [tag], "Layers": names})
    data = json.dumps(manifest).encode()
    minfo = tarfile.TarInfo("manifest.json")
    minfo.size = len(data)
    entries.append((minfo, data))
    with tarfile.open(path, "w") as tar:
        for info, blob in entries:
            tar.addfile(info, io.BytesIO(blob) if blob is not None else None)
    return path


# -- a layer whose config lies about it (issue 20) -----------------------------------------

TRUE, LIE = tar_bytes(F("etc/conf", b"the layer")), tar_bytes(F("etc/conf", b"the config's"))


def lying_layout(path: Path, rootfs: dict[str, Any] | None, how: tuple[str, ...] = ("gzip",)) -> Path:
    """An OCI layout of the one layer TRUE, its config's rootfs `rootfs` (None: the true diff_ids)."""
    lay = Layout()
    lay.index([lay.manifest([TRUE], how=how, rootfs=rootfs)])
    return lay.write_dir(path)
