"""Talking to an image registry (the OCI distribution API): references, manifests, blobs.

The client is urllib3's: connection pooling per host (each of the puller's concurrent
fetches keeps its connection, as an engine's do), TLS verified against the system's
certificates, redirects followed with the Authorization header dropped when the host
changes (registries send blob GETs to a storage backend), and raw streaming
(`preload_content=False`, `decode_content=False`) so the bytes counted and hashed are the
bytes on the wire. Everything a registry sends is untrusted: manifests and configs are
bounded in size and checked against their digests, a blob is read only up to the size its
descriptor gives and refused unless its sha256 matches, and every failure is one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import urllib3

from layerbench.errors import UserError
from layerbench.images.oci import LAYER_MEDIA_TYPES, pick_manifest

if TYPE_CHECKING:
    from layerbench.images.image_sources import ArchiveImage

__all__ = ["Reference", "RegistryClient", "Descriptor", "Manifest", "open_reference", "MAX_LAYERS"]

_MAX_MANIFEST = 4 << 20
_MAX_CONFIG = 16 << 20
_MAX_TOKEN = 64 << 10
#: layers an image pulled from a registry may have
MAX_LAYERS = 1000
_CHUNK = 1 << 20
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::\d{1,5})?$")
_MANIFESTS = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_INDEXES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
_ACCEPT = ", ".join(_MANIFESTS + _INDEXES)


@dataclass(frozen=True)
class Reference:
    """`host[:port]/name[:tag][@sha256:...]`: an image in a registry."""

    host: str
    name: str
    tag: str = "latest"
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        where = f"image reference {text[:200]!r}"
        if not isinstance(text, str) or len(text) > 1024 or "/" not in text:
            raise UserError(f"{where}: expected host:port/name:tag (or name@sha256:...), such as 127.0.0.1:5000/app:1")
        host, rest = text.split("/", 1)
        digest = None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not _DIGEST.match(digest):
                raise UserError(f"{where}: the digest must be sha256: and 64 hex digits")
        tag = "latest"
        if ":" in rest.rsplit("/", 1)[-1]:
            rest, tag = rest.rsplit(":", 1)
        if not _HOST.match(host):
            raise UserError(f"{where}: {host!r} is not a host[:port]")
        if not _NAME.match(rest):
            raise UserError(f"{where}: {rest!r} is not a repository name (lower-case, digits, . _ - /)")
        if not _TAG.match(tag):
            raise UserError(f"{where}: {tag!r} is not a tag")
        return cls(host, rest, tag, digest)

    def __str__(self) -> str:
        return f"{self.host}/{self.name}" + (f"@{self.digest}" if self.digest else f":{self.tag}")


@dataclass(frozen=True)
class Descriptor:
    """A blob the manifest names: its media type, digest and size, checked."""

    media_type: str
    digest: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """An image manifest resolved to this platform: its config blob and layers, bottom first."""

    digest: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    raw: bytes
    media_type: str


def _descriptor(label: str, obj: Any, *, layer: bool) -> Descriptor:
    if not isinstance(obj, dict):
        raise UserError(f"{label}: a descriptor is not an object")
    media, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise UserError(f"{label}: digest {str(digest)[:80]!r} is not sha256: and 64 hex digits")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise UserError(f"{label}: size {str(size)[:40]!r} is not a whole number of bytes")
    if not isinstance(media, str):
        raise UserError(f"{label}: a descriptor has no mediaType")
    if layer and media not in LAYER_MEDIA_TYPES:
        raise UserError(f"{label}: layer media type {media[:100]!r} is not a tar layer")
    return Descriptor(media, digest, size)


@dataclass
class RegistryClient:
    """One registry's API over urllib3; `insecure` talks HTTP instead of HTTPS (a local registry)."""

    host: str
    insecure: bool = False
    token: str | None = None
    timeout: float = 60.0
    pool: urllib3.PoolManager = field(init=False, repr=False)
    _bearer: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=8,
            timeout=urllib3.Timeout(connect=min(10.0, self.timeout), read=self.timeout),
            retries=urllib3.Retry(total=3, connect=2, read=0, redirect=5, status=0, raise_on_redirect=True),
        )
        self._bearer = self.token

    @property
    def base(self) -> str:
        return f"{'http' if self.insecure else 'https'}://{self.host}/v2/"

    def _headers(self, accept: str | None = None) -> dict[str, str]:
        headers = {"User-Agent": "layerbench"}
        if accept:
            headers["Accept"] = accept
        if self._bearer:
            headers["Authorization"] = f"Bearer {self._bearer}"
        return headers

    def _get(self, url: str, what: str, accept: str | None = None) -> urllib3.BaseHTTPResponse:
        """GET `url` streaming; once through a registry's token challenge (anonymous pull tokens)."""
        for attempt in range(2):
            try:
                resp = self.pool.request(
                    "GET", url, headers=self._headers(accept), preload_content=False, decode_content=False
                )
            except urllib3.exceptions.HTTPError as exc:
                reason = getattr(exc, "reason", None) or exc
                raise UserError(f"{what}: cannot reach the registry at {self.host} ({reason})") from None
            if resp.status == 401 and attempt == 0 and self._challenge(resp.headers.get("WWW-Authenticate", "")):
                resp.release_conn()
                continue
            if resp.status != 200:
                body = resp.read(512, decode_content=False)
                resp.release_conn()
                text = body.decode("utf-8", "replace").strip().replace("\n", " ")[:160]
                raise UserError(f"{what}: the registry at {self.host} answered HTTP {resp.status} ({text})")
            return resp
        raise AssertionError("unreachable")

    def _challenge(self, header: str) -> bool:
        """Take an anonymous token from a `Bearer realm=...` challenge; False if there is none to take."""
        if not header.lower().startswith("bearer "):
            return False
        params = dict(re.findall(r'(\w+)="([^"]*)"', header))
        realm = params.pop("realm", "")
        if not realm.startswith(("https://", "http://")):
            return False
        url = realm + ("&" if "?" in realm else "?") + urlencode(params)
        try:
            resp = self.pool.request("GET", url, headers={"User-Agent": "layerbench"}, preload_content=False)
            body = resp.read(_MAX_TOKEN + 1)
        except urllib3.exceptions.HTTPError as exc:
            raise UserError(f"{self.host}: cannot get a pull token from {realm[:100]} ({exc})") from None
        if resp.status != 200 or len(body) > _MAX_TOKEN:
            raise UserError(f"{self.host}: the token service {realm[:100]} answered HTTP {resp.status}")
        try:
            doc = json.loads(body)
        except ValueError:
            raise UserError(f"{self.host}: the token service {realm[:100]} sent no JSON") from None
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise UserError(f"{self.host}: the token service {realm[:100]} sent no token")
        self._bearer = token
        return True

    def _small(self, url: str, what: str, limit: int, accept: str | None = None) -> tuple[bytes, str]:
        resp = self._get(url, what, accept)
        try:
            declared = resp.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise UserError(f"{what}: {declared} bytes is more than the {limit} bytes allowed")
            body = resp.read(limit + 1, decode_content=False)
        except urllib3.exceptions.HTTPError as exc:
            raise UserError(f"{what}: the transfer failed ({exc})") from None
        finally:
            resp.release_conn()
        if len(body) > limit:
            raise UserError(f"{what}: more than the {limit} bytes allowed")
        return body, resp.headers.get("Content-Type", "").split(";")[0].strip()

    def manifest(self, ref: Reference) -> Manifest:
        """The image manifest of `ref`, an index resolved to this platform, every digest checked."""
        wanted: str | None = ref.digest
        target = ref.digest or ref.tag
        for _ in range(3):
            what = f"{ref.host}/{ref.name}@{target}" if target.startswith("sha256:") else str(ref)
            body, ctype = self._small(f"{self.base}{ref.name}/manifests/{target}", what, _MAX_MANIFEST, _ACCEPT)
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            if wanted is not None and digest != wanted:
                raise UserError(f"{what}: the manifest does not match its digest {wanted}")
            try:
                doc = json.loads(body)
            except ValueError:
                raise UserError(f"{what}: the manifest is not JSON") from None
            if not isinstance(doc, dict):
                raise UserError(f"{what}: the manifest is not a JSON object")
            media = doc.get("mediaType") if isinstance(doc.get("mediaType"), str) else ctype
            if media in _INDEXES or "manifests" in doc:
                descs = doc.get("manifests")
                if not isinstance(descs, list) or len(descs) > MAX_LAYERS:
                    raise UserError(f"{what}: the index's manifests are not a list")
                chosen = pick_manifest(what, descs)
                wanted = target = _descriptor(what, chosen, layer=False).digest
                continue
            if media not in _MANIFESTS and "layers" not in doc:
                raise UserError(f"{what}: not an image manifest (mediaType {str(media)[:100]!r})")
            layers = doc.get("layers")
            if not isinstance(layers, list) or not 0 < len(layers) <= MAX_LAYERS:
                raise UserError(f"{what}: the manifest has no list of 1 to {MAX_LAYERS} layers")
            config = _descriptor(f"{what}: config", doc.get("config"), layer=False)
            if config.size > _MAX_CONFIG:
                raise UserError(f"{what}: the config blob is {config.size} bytes, more than the {_MAX_CONFIG} allowed")
            return Manifest(
                digest,
                config,
                tuple(_descriptor(f"{what}: layers[{i}]", d, layer=True) for i, d in enumerate(layers)),
                body,
                str(media),
            )
        raise UserError(f"{ref}: image indexes nested too deep")

    def config(self, ref: Reference, desc: Descriptor) -> bytes:
        """The config blob, checked against its digest."""
        what = f"{ref.host}/{ref.name}@{desc.digest}"
        body, _ = self._small(f"{self.base}{ref.name}/blobs/{desc.digest}", what, _MAX_CONFIG)
        if "sha256:" + hashlib.sha256(body).hexdigest() != desc.digest:
            raise UserError(f"{what}: the config does not match its digest")
        return body

    def fetch_blob(self, ref: Reference, desc: Descriptor, dest: Path, limit: int | None = None) -> int:
        """Stream the blob into the new file `dest`, at most `desc.size` bytes, verified; the bytes transferred.

        `limit` bounds `desc.size` (the free disk, or the user's --max-image-bytes); a blob over its
        declared size, short of it, or not matching its digest is refused in one line and `dest` removed.
        """
        what = f"{ref.host}/{ref.name}@{desc.digest}"
        if limit is not None and desc.size > limit:
            raise UserError(f"{what}: the layer is {desc.size} bytes, more than the {limit} bytes allowed")
        resp = self._get(f"{self.base}{ref.name}/blobs/{desc.digest}", what)
        h = hashlib.sha256()
        got = 0
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                while True:
                    chunk = resp.read(_CHUNK, decode_content=False)
                    if not chunk:
                        break
                    got += len(chunk)
                    if got > desc.size:
                        raise UserError(f"{what}: the registry sent more than the {desc.size} bytes the manifest gives")
                    h.update(chunk)
                    out.write(chunk)
        except urllib3.exceptions.HTTPError as exc:
            dest.unlink(missing_ok=True)
            raise UserError(f"{what}: the transfer failed ({exc})") from None
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        finally:
            resp.release_conn()
        if got != desc.size or "sha256:" + h.hexdigest() != desc.digest:
            dest.unlink(missing_ok=True)
            why = f"{got} of {desc.size} bytes" if got != desc.size else "does not match its digest"
            raise UserError(f"{what}: the layer {why}")
        return got

    def close(self) -> None:
        self.pool.clear()


def client_for(reference: str, token: str | None = None, insecure: bool = False) -> tuple[RegistryClient, Reference]:
    ref = Reference.parse(reference)
    return RegistryClient(ref.host, insecure=insecure, token=token), ref


def open_reference(
    reference: str,
    *,
    token: str | None = None,
    insecure: bool = False,
    cache: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> ArchiveImage:
    """A user's image from a registry, fetched once into a content-addressed OCI layout under the work
    root (`registry-cache/<manifest digest>`), then opened as any OCI layout is: a `pull` step pulls it
    from the registry again, each sample."""
    from layerbench.images.caches import cache_root
    from layerbench.images.image_sources import ArchiveImage, open_image

    client, ref = client_for(reference, token, insecure)
    try:
        manifest = client.manifest(ref)
        root = cache or cache_root() / "registry-cache"
        dest = root / manifest.digest.split(":", 1)[1]
        if not (dest / "index.json").is_file():
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
            try:
                blobs = partial / "blobs" / "sha256"
                blobs.mkdir(parents=True)
                (blobs / manifest.digest.split(":", 1)[1]).write_bytes(manifest.raw)
                (blobs / manifest.config.digest.split(":", 1)[1]).write_bytes(client.config(ref, manifest.config))
                free = shutil.disk_usage(root).free
                for i, desc in enumerate(manifest.layers):
                    if progress is not None:
                        progress(f"layer {i + 1}/{len(manifest.layers)} ({desc.size} bytes)")
                    target = blobs / desc.digest.split(":", 1)[1]
                    if not target.exists():
                        client.fetch_blob(ref, desc, target, limit=free)
                index = {
                    "schemaVersion": 2,
                    "manifests": [
                        {
                            "mediaType": manifest.media_type,
                            "digest": manifest.digest,
                            "size": len(manifest.raw),
                            "annotations": {"org.opencontainers.image.ref.name": str(ref)},
                        }
                    ],
                }
                (partial / "index.json").write_text(json.dumps(index))
                (partial / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
                os.rename(partial, dest)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
    finally:
        client.close()
    image = open_image("oci", dest)
    assert isinstance(image, ArchiveImage)
    return image
