"""Image sources: OCI image layouts, `docker save` / `podman save` archives, host directories.

`read_image` finds an image's layers, bottom first, as `LayerBlob`s (a byte range of
a file: a blob in a layout directory or a member of an uncompressed archive) and
verifies every digest before anything is applied. `apply_blob` applies one with
`layer_tar.apply_tar_layer`. A host directory is one layer: `apply_host_dir`.
Writing a layout is images/oci_write.py; the caches under the work root, images/caches.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import posixpath
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from layerbench.driver import LayerFormat
from layerbench.errors import UserError
from layerbench.images.config import ImageConfig, parse_config
from layerbench.images.layer_encoding import OPAQUE_XATTR
from layerbench.images.layer_stream import BoundedTarInfo, HeaderTooLarge, SizeLimit
from layerbench.images.layer_tar import LayerStats, LowerTree, SymlinkPolicy, apply_host_dir, apply_tar_layer

__all__ = [
    "LayerBlob",
    "LayerStats",
    "read_image",
    "read_config",
    "pick_manifest",
    "apply_blob",
    "apply_tar_layer",
    "apply_host_dir",
    "config_diff_ids",
    "source_kind",
    "LAYER_MEDIA_TYPES",
    "host_platform",
]

LAYER_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)
_INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
_MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
_DIGEST = re.compile(r"^(sha256|sha512):([0-9a-f]+)$")
_HEX_LEN = {"sha256": 64, "sha512": 128}
_MAX_JSON = 16 << 20
#: files in a `docker save` archive (manifest, configs, a directory and a tar per layer): more is not an image
MAX_ARCHIVE_MEMBERS = 100_000
_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


@dataclass(frozen=True)
class LayerBlob:
    """One layer of an image: `size` bytes at `offset` of `path`, as stored (maybe compressed)."""

    name: str  # "<image>:<path in the image>", for messages
    path: Path
    offset: int
    size: int
    media_type: str
    digest: str | None  # "sha256:<hex>" of the stored bytes, when the format records it
    diff_id: str | None = None  # the config's digest of the uncompressed tar, checked while it is read

    def open(self) -> BinaryIO:
        """The stored bytes (compressed as stored); `apply_tar_layer` decompresses."""
        f = open(self.path, "rb")  # noqa: SIM115  closed with the returned reader
        return io.BufferedReader(_Region(f, self.offset, self.size), 1 << 20)


class _Region(io.RawIOBase):
    def __init__(self, f: BinaryIO, offset: int, size: int) -> None:
        self.f, self.pos, self.end = f, offset, offset + size
        self.name = f.name

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buf), self.end - self.pos)
        if n <= 0:
            return 0
        data = os.pread(self.f.fileno(), n, self.pos)
        buf[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def close(self) -> None:
        self.f.close()
        super().close()


def source_kind(path: Path) -> Literal["oci-layout", "docker-archive", "directory"]:
    """What `path` holds: an OCI layout / docker archive (`read_image`) or a plain directory."""
    if path.is_dir():
        if (path / "oci-layout").is_file() or (path / "manifest.json").is_file():
            return "oci-layout" if (path / "oci-layout").is_file() else "docker-archive"
        return "directory"
    if path.is_file():
        return "docker-archive" if _Archive(path).has("manifest.json") else "oci-layout"
    raise UserError(f"{path}: no such file or directory")


def apply_blob(
    root: Path,
    blob: LayerBlob,
    layer_format: LayerFormat,
    *,
    symlinks: SymlinkPolicy = "refuse",
    limit: SizeLimit | None = None,
    lower: LowerTree | None = None,
    opaque_xattr: str = OPAQUE_XATTR,
) -> LayerStats:
    """Apply one layer of `read_image` onto `root` (see `apply_tar_layer`)."""
    with blob.open() as f:
        return apply_tar_layer(
            root,
            f,
            layer_format,
            name=blob.name,
            symlinks=symlinks,
            limit=limit,
            lower=lower,
            opaque_xattr=opaque_xattr,
            diff_id=blob.diff_id,
        )


def read_image(
    path: Path, *, ref: str | None = None, verify: bool = True, limit: SizeLimit | None = None
) -> list[LayerBlob]:
    """The layers of the image at `path`, bottom first, digests verified.

    `path` is an OCI image layout directory, a `docker save` / `podman save` archive
    (legacy `manifest.json` form, or an OCI layout inside the tar), or either one
    unpacked into a directory. `ref` picks one image when there are several (a
    RepoTag or an `org.opencontainers.image.ref.name`). The stored bytes of a layer are
    checked here against the digest that names them; each layer's `diff_id` (from the
    config: the digest of its uncompressed tar) goes with its `LayerBlob` and is checked
    whenever the layer is read (`read_layer`, `apply_blob`): in the same pass as the
    decompression, never a pass of its own. `limit` is kept for callers; reading a layer
    stops at the limit it is read with. Raises `UserError`.
    """
    src: _Dir | _Archive = _Dir(path) if path.is_dir() else _Archive(path)
    if src.has("manifest.json"):
        layers = _docker(src, ref)
    elif src.has("oci-layout"):
        layers = _oci(src, ref)
    else:
        raise UserError(
            f"{path}: neither an OCI image layout (no oci-layout) nor a docker save archive (no manifest.json)"
        )
    if verify:
        for blob in layers:
            _verify(blob)
    return layers


# -- where the files are ---------------------------------------------------------------------


def _clean(label: str, name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise UserError(f"{label}: a file name in the image is not a string: {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise UserError(f"{label}: file name {name!r} leaves the image")
    return "/".join(parts)


class _Dir:
    def __init__(self, path: Path) -> None:
        self.path, self.label = path, str(path)
        self.real = os.path.realpath(path)

    def has(self, name: str) -> bool:
        return os.path.isfile(os.path.join(self.path, name))

    def locate(self, name: str) -> tuple[Path, int, int]:
        name = _clean(self.label, name)
        real = os.path.realpath(os.path.join(self.path, name))
        if not real.startswith(self.real + os.sep):
            raise UserError(f"{self.label}: {name!r} leads outside the image directory")
        if not os.path.isfile(real):
            there = os.path.lexists(real)
            raise UserError(f"{self.label}: {name!r} is {'not a regular file' if there else 'missing'}")
        return Path(real), 0, os.path.getsize(real)


class _Archive:
    def __init__(self, path: Path) -> None:
        self.path, self.label = path, str(path)
        try:
            with open(path, "rb") as f:
                magic = f.read(4)
            members = []
            # headers only, each header block bounded (a 7 GiB PAX header would be read whole), few members
            with tarfile.open(path, "r:", tarinfo=BoundedTarInfo) as tar:
                while (member := tar.next()) is not None:
                    members.append(member)
                    if len(members) > MAX_ARCHIVE_MEMBERS:
                        raise UserError(f"{path}: more than {MAX_ARCHIVE_MEMBERS} files in the archive; not an image")
                    tar.members.clear()  # type: ignore[attr-defined]  # kept here, once
        except HeaderTooLarge as exc:
            raise UserError(f"{path}: {exc}") from None
        except OSError as exc:
            raise UserError(f"{path}: {exc.strerror or exc}") from None
        except tarfile.TarError as exc:
            if magic[:2] == b"\x1f\x8b" or magic == b"\x28\xb5\x2f\xfd":
                raise UserError(f"{path}: a compressed archive; decompress it first (gunzip / zstd -d)") from None
            raise UserError(f"{path}: not a tar archive ({exc})") from None
        self.members = {"/".join(p for p in m.name.split("/") if p not in ("", ".")): m for m in members}

    def has(self, name: str) -> bool:
        return name in self.members

    def locate(self, name: str) -> tuple[Path, int, int]:
        name = _clean(self.label, name)
        for _ in range(16):  # follow symlink and hardlink members inside the archive
            m = self.members.get(name)
            if m is None:
                raise UserError(f"{self.label}: {name!r} is missing from the archive")
            if m.issym():
                base = name.rsplit("/", 1)[0] if "/" in name else "."
                joined = posixpath.normpath(f"{base}/{m.linkname}")
                if m.linkname.startswith("/") or joined == ".." or joined.startswith("../"):
                    raise UserError(f"{self.label}: {m.name!r} links outside the archive")
                name = _clean(self.label, joined)
                continue
            if m.islnk():
                name = _clean(self.label, m.linkname)
                continue
            if not m.isreg() or m.sparse is not None:
                raise UserError(f"{self.label}: {name!r} is not a plain file in the archive")
            return self.path, m.offset_data, m.size
        raise UserError(f"{self.label}: {name!r}: too many links")


def _read_json(src: _Dir | _Archive, name: str, digest: str | None = None) -> Any:
    path, offset, size = src.locate(name)
    if size > _MAX_JSON:
        raise UserError(f"{src.label}: {name}: {size} bytes is too large for image metadata")
    with open(path, "rb") as f:
        data = os.pread(f.fileno(), size, offset)
    if digest is not None:
        alg, hexd = _parse_digest(src.label, digest)
        if hashlib.new(alg, data).hexdigest() != hexd:
            raise UserError(f"{src.label}: {name}: content does not match its digest {digest}")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{src.label}: {name}: not valid JSON ({exc})") from None
    except RecursionError:
        raise UserError(f"{src.label}: {name}: JSON nested too deep for image metadata") from None


def _obj(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one (a malformed optional field reads as absent)."""
    return value if isinstance(value, dict) else {}


def _tags(entry: Any) -> list[str]:
    """The RepoTags of a `manifest.json` entry that are strings."""
    tags = _obj(entry).get("RepoTags")
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


def config_diff_ids(label: str, config: Any, layers: int) -> list[str]:
    """An image config's `rootfs.diff_ids`, one well-formed digest per layer, else a one-line error
    naming `label` (the config)."""
    diff_ids = _obj(_obj(config).get("rootfs")).get("diff_ids")
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise UserError(f"{label}: rootfs.diff_ids is missing or not a list of digests")
    if len(diff_ids) != layers:
        raise UserError(f"{label}: {len(diff_ids)} diff_ids for {layers} layers")
    for d in diff_ids:
        _parse_digest(label, d)
    return diff_ids


def _parse_digest(label: str, digest: Any) -> tuple[str, str]:
    m = _DIGEST.match(digest) if isinstance(digest, str) else None
    if m is None or len(m.group(2)) != _HEX_LEN[m.group(1)]:
        raise UserError(f"{label}: unsupported or malformed digest {digest!r}")
    return m.group(1), m.group(2)


def _blob_name(label: str, digest: Any) -> str:
    alg, hexd = _parse_digest(label, digest)
    return f"blobs/{alg}/{hexd}"


def _field(label: str, obj: Any, key: str, kind: type) -> Any:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind):
        raise UserError(f"{label}: field {key!r} is missing or not a {kind.__name__}")
    return value


# -- OCI image layout ------------------------------------------------------------------------


def host_platform() -> tuple[str, str]:
    """This machine's (os, architecture) as OCI names them: the platform an image index is picked for."""
    machine = platform.machine()
    return "linux", _ARCH.get(machine, machine)


def _pick(label: str, descs: list[Any], ref: str | None) -> dict[str, Any]:
    cands = [d for d in descs if isinstance(d, dict)]
    cands = [
        d
        for d in cands
        if _obj(d.get("annotations")).get("vnd.docker.reference.type") != "attestation-manifest"
        and _obj(d.get("platform")).get("os") != "unknown"
    ]
    if ref is not None:

        def names(d: dict[str, Any]) -> set[str]:
            ann = _obj(d.get("annotations"))
            out = {ann.get("org.opencontainers.image.ref.name"), ann.get("io.containerd.image.name")}
            full = ann.get("io.containerd.image.name")
            if isinstance(full, str):
                out |= {full.rsplit("/", 1)[-1], full.removeprefix("docker.io/library/")}
            return {n for n in out if n and isinstance(n, str)}

        cands = [d for d in cands if ref in names(d) or f"{ref}:latest" in names(d)]
        if not cands:
            raise UserError(f"{label}: no image named {ref!r}")
    if len(cands) > 1:
        want = host_platform()
        here = [
            d for d in cands if (_obj(d.get("platform")).get("os"), _obj(d.get("platform")).get("architecture")) == want
        ]
        cands = here or cands
    if len(cands) != 1:
        raise UserError(f"{label}: {len(cands)} images to choose from; name one (ref)")
    return cands[0]


def _oci_manifest(src: _Dir | _Archive, ref: str | None) -> tuple[str, dict[str, Any]]:
    """The image manifest of an OCI layout (indexes resolved to `ref`, then this platform) and its label."""
    layout = _read_json(src, "oci-layout")
    if not isinstance(layout, dict) or "imageLayoutVersion" not in layout:
        raise UserError(f"{src.label}: oci-layout has no imageLayoutVersion")
    doc = _read_json(src, "index.json")
    label = f"{src.label}:index.json"
    for depth in range(4):
        desc = _pick(label, _field(label, doc, "manifests", list), ref if depth == 0 else None)
        media = desc.get("mediaType")
        name = _blob_name(label, desc.get("digest"))
        doc = _read_json(src, name, desc["digest"])
        label = f"{src.label}:{name}"
        media = doc.get("mediaType", media) if isinstance(doc, dict) else media
        if media in _INDEX_TYPES or (isinstance(doc, dict) and "manifests" in doc):
            continue
        if media not in _MANIFEST_TYPES and not (isinstance(doc, dict) and "layers" in doc):
            raise UserError(f"{label}: not an image manifest (mediaType {media!r})")
        return label, doc
    raise UserError(f"{src.label}: image indexes nested too deep")


def read_config(path: Path, *, ref: str | None = None) -> ImageConfig | None:
    """The runtime config (Entrypoint, Cmd, Env, the ready label) of the image at `path`, read as
    `read_image` reads its layers; None when the image has no config blob (an old docker archive)."""
    src: _Dir | _Archive = _Dir(path) if path.is_dir() else _Archive(path)
    if src.has("manifest.json"):
        entries = _read_json(src, "manifest.json")
        entry = entries[0] if isinstance(entries, list) and len(entries) == 1 else None
        if ref is not None and isinstance(entries, list):
            tagged = [m for m in entries if isinstance(m, dict) and ref in _tags(m)]
            entry = tagged[0] if len(tagged) == 1 else entry
        name = entry.get("Config") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            return None
        return parse_config(f"{src.label}:{name}", _read_json(src, _clean(src.label, name), _digest_from_name(name)))
    label, doc = _oci_manifest(src, ref)
    desc = doc.get("config")
    if not isinstance(desc, dict):
        return None
    name = _blob_name(label, desc.get("digest"))
    return parse_config(f"{src.label}:{name}", _read_json(src, name, desc["digest"]))


def pick_manifest(label: str, descs: list[Any]) -> dict[str, Any]:
    """The descriptor of an image index's manifests for this platform (a registry's index, too)."""
    return _pick(label, descs, None)


def _oci(src: _Dir | _Archive, ref: str | None) -> list[LayerBlob]:
    label, doc = _oci_manifest(src, ref)
    descs = _field(label, doc, "layers", list)
    cdesc = _field(label, doc, "config", dict)
    cname = _blob_name(label, cdesc.get("digest"))
    diff_ids = config_diff_ids(f"{src.label}:{cname}", _read_json(src, cname, cdesc["digest"]), len(descs))
    out: list[LayerBlob] = []
    for layer, diff_id in zip(descs, diff_ids, strict=True):
        ltype = _field(label, layer, "mediaType", str)
        if ltype not in LAYER_MEDIA_TYPES:
            raise UserError(f"{label}: layer media type {ltype!r} is not a tar layer")
        lname = _blob_name(label, layer.get("digest"))
        path, offset, size = src.locate(lname)
        if isinstance(layer.get("size"), int) and layer["size"] != size:
            raise UserError(f"{src.label}:{lname}: {size} bytes, the manifest says {layer['size']}")
        out.append(LayerBlob(f"{src.label}:{lname}", path, offset, size, ltype, layer["digest"], diff_id))
    return out


# -- docker save / podman save ---------------------------------------------------------------


def _docker(src: _Dir | _Archive, ref: str | None) -> list[LayerBlob]:
    label = f"{src.label}:manifest.json"
    entries = _read_json(src, "manifest.json")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{label}: not a list of images")
    if ref is not None:
        entries = [m for m in entries if isinstance(m, dict) and (ref in _tags(m) or f"{ref}:latest" in _tags(m))]
        if not entries:
            raise UserError(f"{label}: no image tagged {ref!r}")
    if len(entries) != 1:
        tags = [t for m in entries for t in _tags(m)]
        raise UserError(f"{label}: {len(entries)} images ({', '.join(tags) or 'untagged'}); name one (ref)")
    image = entries[0]
    layers = _field(label, image, "Layers", list)
    config_name = image.get("Config")
    if not isinstance(config_name, str):  # docker save always writes one: without it nothing checks the layers
        raise UserError(f"{label}: the image names no Config, so its layers cannot be checked (diff_ids)")
    config = _read_json(src, config_name, _digest_from_name(config_name))
    diff_ids = config_diff_ids(f"{src.label}:{config_name}", config, len(layers))
    out: list[LayerBlob] = []
    for lname, diff_id in zip(layers, diff_ids, strict=True):
        lname = _clean(label, lname)
        path, offset, size = src.locate(lname)
        digest = _digest_from_name(lname)  # a newer docker save names each layer blobs/sha256/<digest>
        out.append(LayerBlob(f"{src.label}:{lname}", path, offset, size, _sniff(path, offset), digest, diff_id))
    return out


def _digest_from_name(name: str) -> str | None:
    m = re.fullmatch(r"(?:.*/)?blobs/(sha256|sha512)/([0-9a-f]+)", name)
    return f"{m.group(1)}:{m.group(2)}" if m else None


def _sniff(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        head = os.pread(f.fileno(), 4, offset)
    if head.startswith(b"\x1f\x8b"):
        return "application/vnd.oci.image.layer.v1.tar+gzip"
    if head == b"\x28\xb5\x2f\xfd":
        return "application/vnd.oci.image.layer.v1.tar+zstd"
    return "application/vnd.oci.image.layer.v1.tar"


def _verify(blob: LayerBlob) -> None:
    """Refuse a blob whose stored bytes do not match the digest naming them (its diff_id is checked as it is read)."""
    if blob.digest is None:
        return
    alg, hexd = _parse_digest(blob.name, blob.digest)
    h = hashlib.new(alg)
    with blob.open() as f:
        try:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        except OSError as exc:
            raise UserError(f"{blob.name}: cannot read the layer ({exc})") from None
    if h.hexdigest() != hexd:
        raise UserError(f"{blob.name}: does not match its digest {blob.digest}")
