"""A small client of containerd's gRPC API: the messages layerbench needs, described here, and the calls.

No generated code: the few messages the snapshotter drivers use (snapshots, content,
diff, leases, namespaces, introspection) are described below by their field numbers,
which are containerd's wire contract (its `api/` protos, stable since 1.0), and built
into protobuf classes at import time. Every call carries the `containerd-namespace`
metadata header, and the `containerd-lease` header once a lease is taken, so nothing
made is garbage-collected under us. A gRPC error becomes an OSError naming the call.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

# gRPC's fork handlers (on by default) run in every child this process forks while a channel is open, and
# there fail (a poller's descriptor gone: "epoll_wait error: Bad file descriptor") before the child's own
# preexec work (crun's setns into its holder's namespace) and exec: the run step forks crun while our
# channel to containerd is open. A child here never uses gRPC, so the handlers are off (read when gRPC loads).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

__all__ = ["Containerd", "MountSpec", "Descriptor", "connect_path", "OCI_SPEC_TYPE"]

_STRING, _INT64, _BYTES, _BOOL, _INT32, _MESSAGE = 9, 3, 12, 8, 5, 11
_OPTIONAL, _REPEATED = 1, 3
#: a field: name, number, kind (a scalar type, "map" for map<string,string>, or a message's full name), repeated
_Field = tuple[str, int, int | str, bool]

_STR_MAP = "map"
_MESSAGES: dict[str, list[_Field]] = {
    "containerd.types.Mount": [
        ("type", 1, _STRING, False),
        ("source", 2, _STRING, False),
        ("target", 3, _STRING, False),
        ("options", 4, _STRING, True),
    ],
    "containerd.types.Descriptor": [
        ("media_type", 1, _STRING, False),
        ("digest", 2, _STRING, False),
        ("size", 3, _INT64, False),
        ("annotations", 5, _STR_MAP, False),
    ],
    "containerd.types.Empty": [],
    "containerd.snapshots.PrepareRequest": [
        ("snapshotter", 1, _STRING, False),
        ("key", 2, _STRING, False),
        ("parent", 3, _STRING, False),
        ("labels", 4, _STR_MAP, False),
    ],
    "containerd.snapshots.MountsResponse": [("mounts", 1, "containerd.types.Mount", True)],
    "containerd.snapshots.KeyRequest": [("snapshotter", 1, _STRING, False), ("key", 2, _STRING, False)],
    "containerd.snapshots.CommitRequest": [
        ("snapshotter", 1, _STRING, False),
        ("name", 2, _STRING, False),
        ("key", 3, _STRING, False),
        ("labels", 4, _STR_MAP, False),
    ],
    "containerd.snapshots.UsageResponse": [("size", 1, _INT64, False), ("inodes", 2, _INT64, False)],
    "containerd.content.WriteRequest": [
        ("action", 1, _INT32, False),  # an enum on the wire: STAT 0, WRITE 1, COMMIT 2
        ("ref", 2, _STRING, False),
        ("total", 3, _INT64, False),
        ("expected", 4, _STRING, False),
        ("offset", 5, _INT64, False),
        ("data", 6, _BYTES, False),
        ("labels", 7, _STR_MAP, False),
    ],
    "containerd.content.WriteResponse": [
        ("action", 1, _INT32, False),
        ("offset", 4, _INT64, False),
        ("total", 5, _INT64, False),
        ("digest", 6, _STRING, False),
    ],
    "containerd.content.DeleteRequest": [("digest", 1, _STRING, False)],
    "containerd.diff.ApplyRequest": [
        ("diff", 1, "containerd.types.Descriptor", False),
        ("mounts", 2, "containerd.types.Mount", True),
    ],
    "containerd.diff.ApplyResponse": [("applied", 1, "containerd.types.Descriptor", False)],
    "containerd.diff.DiffRequest": [
        ("left", 1, "containerd.types.Mount", True),
        ("right", 2, "containerd.types.Mount", True),
        ("media_type", 3, _STRING, False),
        ("ref", 4, _STRING, False),
        ("labels", 5, _STR_MAP, False),
    ],
    "containerd.diff.DiffResponse": [("diff", 3, "containerd.types.Descriptor", False)],
    "containerd.leases.Lease": [("id", 1, _STRING, False), ("labels", 3, _STR_MAP, False)],
    "containerd.leases.CreateRequest": [("id", 1, _STRING, False), ("labels", 3, _STR_MAP, False)],
    "containerd.leases.CreateResponse": [("lease", 1, "containerd.leases.Lease", False)],
    "containerd.leases.DeleteRequest": [("id", 1, _STRING, False), ("sync", 2, _BOOL, False)],
    "containerd.namespaces.DeleteRequest": [("name", 1, _STRING, False)],
    "containerd.namespaces.ListRequest": [("filter", 1, _STRING, False)],
    "containerd.namespaces.Namespace": [("name", 1, _STRING, False)],
    "containerd.namespaces.ListResponse": [("namespaces", 1, "containerd.namespaces.Namespace", True)],
    "containerd.introspection.PluginsRequest": [("filters", 1, _STRING, True)],
    "containerd.introspection.Status": [("code", 1, _INT32, False), ("message", 2, _STRING, False)],
    "containerd.introspection.Plugin": [
        ("type", 1, _STRING, False),
        ("id", 2, _STRING, False),
        ("exports", 5, _STR_MAP, False),
        ("init_err", 7, "containerd.introspection.Status", False),
    ],
    "containerd.introspection.PluginsResponse": [("plugins", 1, "containerd.introspection.Plugin", True)],
    # content: what the store holds (its own record of each blob's size), and a blob's bytes
    "containerd.content.Info": [
        ("digest", 1, _STRING, False),
        ("size", 2, _INT64, False),
        ("labels", 5, _STR_MAP, False),
    ],
    "containerd.content.ListContentRequest": [("filters", 1, _STRING, True)],
    "containerd.content.ListContentResponse": [("info", 1, "containerd.content.Info", True)],
    "containerd.content.ReadContentRequest": [
        ("digest", 1, _STRING, False),
        ("offset", 2, _INT64, False),
        ("size", 3, _INT64, False),
    ],
    "containerd.content.ReadContentResponse": [("offset", 1, _INT64, False), ("data", 2, _BYTES, False)],
    # images: the record a pull makes (name -> the manifest's descriptor)
    "containerd.images.Image": [
        ("name", 1, _STRING, False),
        ("labels", 2, _STR_MAP, False),
        ("target", 3, "containerd.types.Descriptor", False),
    ],
    "containerd.images.GetImageRequest": [("name", 1, _STRING, False)],
    "containerd.images.GetImageResponse": [("image", 1, "containerd.images.Image", False)],
    "containerd.images.DeleteImageRequest": [("name", 1, _STRING, False), ("sync", 2, _BOOL, False)],
    # containers: the record `ctr containers create` / the client's NewContainer makes (google.protobuf.Any
    # is described here under a name of ours: only its two fields travel)
    "containerd.containers.Any": [("type_url", 1, _STRING, False), ("value", 2, _BYTES, False)],
    "containerd.containers.Runtime": [("name", 1, _STRING, False)],
    "containerd.containers.Container": [
        ("id", 1, _STRING, False),
        ("labels", 2, _STR_MAP, False),
        ("image", 3, _STRING, False),
        ("runtime", 4, "containerd.containers.Runtime", False),
        ("spec", 5, "containerd.containers.Any", False),
        ("snapshotter", 6, _STRING, False),
        ("snapshot_key", 7, _STRING, False),
    ],
    "containerd.containers.CreateContainerRequest": [("container", 1, "containerd.containers.Container", False)],
    "containerd.containers.CreateContainerResponse": [("container", 1, "containerd.containers.Container", False)],
    "containerd.containers.DeleteContainerRequest": [("id", 1, _STRING, False)],
    # listing what a namespace holds, to empty it (drivers/_containerd_namespace.py)
    "containerd.containers.ListContainersRequest": [("filters", 1, _STRING, True)],
    "containerd.containers.ListContainersResponse": [("containers", 1, "containerd.containers.Container", True)],
    "containerd.images.ListImagesRequest": [("filters", 1, _STRING, True)],
    "containerd.images.ListImagesResponse": [("images", 1, "containerd.images.Image", True)],
    "containerd.leases.ListRequest": [("filters", 1, _STRING, True)],
    "containerd.leases.ListResponse": [("leases", 1, "containerd.leases.Lease", True)],
    "containerd.snapshots.ListSnapshotsRequest": [("snapshotter", 1, _STRING, False), ("filters", 2, _STRING, True)],
    "containerd.snapshots.Info": [("name", 1, _STRING, False), ("parent", 2, _STRING, False)],
    "containerd.snapshots.ListSnapshotsResponse": [("info", 1, "containerd.snapshots.Info", True)],
    "containerd.content.Status": [("ref", 3, _STRING, False)],
    "containerd.content.ListStatusesRequest": [("filters", 1, _STRING, True)],
    "containerd.content.ListStatusesResponse": [("statuses", 1, "containerd.content.Status", True)],
    "containerd.content.AbortRequest": [("ref", 1, _STRING, False)],
}


def _build_classes() -> dict[str, type[message.Message]]:
    """Protobuf classes for `_MESSAGES`, in a pool of their own (no clash with any other package's)."""
    pool = descriptor_pool.DescriptorPool()
    packages: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for full in _MESSAGES:
        package = full.rsplit(".", 1)[0]
        packages.setdefault(
            package, descriptor_pb2.FileDescriptorProto(name=f"layerbench/{package}.proto", package=package)
        )
    for full, fields in _MESSAGES.items():
        package, name = full.rsplit(".", 1)
        fd = packages[package]
        fd.syntax = "proto3"
        msg = fd.message_type.add(name=name)
        for fname, number, kind, repeated in fields:
            f = msg.field.add(name=fname, number=number, label=_REPEATED if repeated else _OPTIONAL)
            if kind == _STR_MAP:
                entry = msg.nested_type.add(name=f"{fname.title().replace('_', '')}Entry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=_STRING, label=_OPTIONAL)
                entry.field.add(name="value", number=2, type=_STRING, label=_OPTIONAL)
                f.label, f.type, f.type_name = _REPEATED, _MESSAGE, f".{full}.{entry.name}"
            elif isinstance(kind, str):
                f.type, f.type_name = _MESSAGE, f".{kind}"
                dep = f"layerbench/{kind.rsplit('.', 1)[0]}.proto"
                if dep != fd.name and dep not in fd.dependency:
                    fd.dependency.append(dep)
            else:
                f.type = kind
    for fd in sorted(packages.values(), key=lambda f: (len(f.dependency), f.name)):
        pool.Add(fd)
    return {full: message_factory.GetMessageClass(pool.FindMessageTypeByName(full)) for full in _MESSAGES}


_M = _build_classes()


def _new(full: str, **fields: Any) -> Any:
    return _M[full](**fields)


@dataclass(frozen=True)
class MountSpec:
    """One mount as containerd hands it out (its `containerd.types.Mount`)."""

    type: str
    source: str
    options: tuple[str, ...]

    def option(self, key: str) -> str | None:
        """The value of option `key=...`, or None."""
        prefix = key + "="
        return next((o[len(prefix) :] for o in self.options if o.startswith(prefix)), None)


@dataclass(frozen=True)
class Descriptor:
    """A blob in containerd's content store."""

    media_type: str
    digest: str
    size: int


_ERRNO = {
    grpc.StatusCode.NOT_FOUND: errno.ENOENT,
    grpc.StatusCode.ALREADY_EXISTS: errno.EEXIST,
    grpc.StatusCode.FAILED_PRECONDITION: errno.EBUSY,
    grpc.StatusCode.INVALID_ARGUMENT: errno.EINVAL,
    grpc.StatusCode.UNAVAILABLE: errno.ECONNREFUSED,
    grpc.StatusCode.DEADLINE_EXCEEDED: errno.ETIMEDOUT,
    grpc.StatusCode.UNIMPLEMENTED: errno.ENOSYS,
}

#: a unix socket path the kernel takes (sun_path is 108 bytes with its NUL)
_SUN_PATH = 107
#: the type URL containerd's client gives a container's OCI runtime spec (JSON) in its record
OCI_SPEC_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/Spec"


def connect_path(socket: str, dir_fd: int | None = None, limit: int = _SUN_PATH) -> str:
    """`socket`, or where it is longer than `limit` (a unix address's), its name through `/proc/self/fd/<dir_fd>/`."""
    if len(os.fsencode(socket)) <= limit:
        return socket
    if dir_fd is None:
        raise OSError(errno.ENAMETOOLONG, f"containerd socket path longer than {_SUN_PATH} bytes", socket)
    return f"/proc/self/fd/{dir_fd}/{os.path.basename(socket)}"


class Containerd:
    """containerd's API at `address` (a unix socket), every call in `namespace`."""

    def __init__(self, address: str, namespace: str, timeout_s: float = 600.0) -> None:
        self.address, self.namespace, self.timeout_s = address, namespace, timeout_s
        self._channel = grpc.insecure_channel(
            f"unix:{address}", options=[("grpc.max_receive_message_length", 64 << 20)]
        )
        self._metadata: tuple[tuple[str, str], ...] = (("containerd-namespace", namespace),)
        self.lease: str | None = None

    def close(self) -> None:
        self._channel.close()

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the channel connects (the daemon serves), or OSError(ETIMEDOUT)."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            raise OSError(
                errno.ETIMEDOUT, f"containerd at {self.address} did not answer in {timeout_s:.0f} s"
            ) from None

    # --- the calls ---------------------------------------------------------------------

    def _call(self, method: str, request: Any, response: str) -> Any:
        rpc = self._channel.unary_unary(
            method, request_serializer=type(request).SerializeToString, response_deserializer=_M[response].FromString
        )
        try:
            return rpc(request, metadata=self._metadata, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _os_error(method, exc) from None

    def _snap(self, call: str, response: str = "containerd.types.Empty", **fields: Any) -> Any:
        kind = {
            "Prepare": "PrepareRequest",
            "View": "PrepareRequest",
            "Commit": "CommitRequest",
        }.get(call, "KeyRequest")
        request = _new(f"containerd.snapshots.{kind}", **fields)
        return self._call(f"/containerd.services.snapshots.v1.Snapshots/{call}", request, response)

    def prepare(self, snapshotter: str, key: str, parent: str = "") -> list[MountSpec]:
        """An active snapshot `key` on `parent` (a writable container or layer); its mounts."""
        r = self._snap(
            "Prepare", "containerd.snapshots.MountsResponse", snapshotter=snapshotter, key=key, parent=parent
        )
        return _mounts(r.mounts)

    def view(self, snapshotter: str, key: str, parent: str) -> list[MountSpec]:
        """A read-only view `key` of `parent`; its mounts."""
        r = self._snap("View", "containerd.snapshots.MountsResponse", snapshotter=snapshotter, key=key, parent=parent)
        return _mounts(r.mounts)

    def mounts(self, snapshotter: str, key: str) -> list[MountSpec]:
        r = self._snap("Mounts", "containerd.snapshots.MountsResponse", snapshotter=snapshotter, key=key)
        return _mounts(r.mounts)

    def commit(self, snapshotter: str, name: str, key: str) -> None:
        """Commit active snapshot `key` as `name` (`key` goes)."""
        self._snap("Commit", snapshotter=snapshotter, name=name, key=key)

    def remove(self, snapshotter: str, key: str) -> None:
        self._snap("Remove", snapshotter=snapshotter, key=key)

    def usage(self, snapshotter: str, key: str) -> tuple[int, int]:
        """The snapshot's own bytes and inodes, as the snapshotter counts them."""
        r = self._snap("Usage", "containerd.snapshots.UsageResponse", snapshotter=snapshotter, key=key)
        return int(r.size), int(r.inodes)

    def write_content(self, ref: str, chunks: Iterable[bytes], size: int, digest: str) -> None:
        """Write a blob of `size` bytes and `digest` into the content store (one Write stream)."""

        def requests() -> Iterator[Any]:
            offset = 0
            for chunk in chunks:
                yield _new("containerd.content.WriteRequest", action=1, ref=ref, total=size, offset=offset, data=chunk)
                offset += len(chunk)
            yield _new("containerd.content.WriteRequest", action=2, ref=ref, total=size, offset=offset, expected=digest)

        method = "/containerd.services.content.v1.Content/Write"
        rpc = self._channel.stream_stream(
            method,
            request_serializer=_M["containerd.content.WriteRequest"].SerializeToString,
            response_deserializer=_M["containerd.content.WriteResponse"].FromString,
        )
        try:
            for _ in rpc(requests(), metadata=self._metadata, timeout=self.timeout_s):
                pass
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:  # the same blob is there already: fine
                raise _os_error(method, exc) from None

    def delete_content(self, digest: str) -> None:
        request = _new("containerd.content.DeleteRequest", digest=digest)
        self._call("/containerd.services.content.v1.Content/Delete", request, "containerd.types.Empty")

    def apply(self, blob: Descriptor, mounts: list[MountSpec]) -> None:
        """The Diff service's applier: unpack `blob` onto `mounts` (it mounts them itself)."""
        request = _new("containerd.diff.ApplyRequest", diff=_descriptor(blob), mounts=[_mount(m) for m in mounts])
        self._call("/containerd.services.diff.v1.Diff/Apply", request, "containerd.diff.ApplyResponse")

    def diff(self, left: list[MountSpec], right: list[MountSpec], media_type: str, ref: str) -> Descriptor:
        """The Diff service's differ: the changes from `left` to `right` as a blob in the content store."""
        request = _new(
            "containerd.diff.DiffRequest",
            left=[_mount(m) for m in left],
            right=[_mount(m) for m in right],
            media_type=media_type,
            ref=ref,
        )
        d = self._call("/containerd.services.diff.v1.Diff/Diff", request, "containerd.diff.DiffResponse").diff
        return Descriptor(d.media_type, d.digest, int(d.size))

    def take_lease(self, lease_id: str) -> None:
        """Create lease `lease_id` and hold it on every later call: what is made is not collected."""
        request = _new("containerd.leases.CreateRequest", id=lease_id)
        self._call("/containerd.services.leases.v1.Leases/Create", request, "containerd.leases.CreateResponse")
        self.lease = lease_id
        self._metadata = (("containerd-namespace", self.namespace), ("containerd-lease", lease_id))

    def drop_lease(self) -> None:
        if self.lease is None:
            return
        request = _new("containerd.leases.DeleteRequest", id=self.lease, sync=True)
        self._metadata = (("containerd-namespace", self.namespace),)
        self._call("/containerd.services.leases.v1.Leases/Delete", request, "containerd.types.Empty")
        self.lease = None

    def collect_garbage(self, lease_id: str) -> None:
        """Run containerd's garbage collector now: a lease created and deleted with `sync`."""
        self._call(
            "/containerd.services.leases.v1.Leases/Create",
            _new("containerd.leases.CreateRequest", id=lease_id),
            "containerd.leases.CreateResponse",
        )
        request = _new("containerd.leases.DeleteRequest", id=lease_id, sync=True)
        self._call("/containerd.services.leases.v1.Leases/Delete", request, "containerd.types.Empty")

    def cleanup(self, snapshotter: str) -> None:
        """The snapshotter's Cleanup: it removes what removed snapshots left (overlayfs, native: `rm-*`)."""
        self._snap("Cleanup", snapshotter=snapshotter)

    def delete_namespace(self) -> None:
        request = _new("containerd.namespaces.DeleteRequest", name=self.namespace)
        self._call("/containerd.services.namespaces.v1.Namespaces/Delete", request, "containerd.types.Empty")

    def namespaces(self) -> list[str]:
        """Every namespace the daemon holds."""
        request = _new("containerd.namespaces.ListRequest")
        r = self._call(
            "/containerd.services.namespaces.v1.Namespaces/List", request, "containerd.namespaces.ListResponse"
        )
        return [n.name for n in r.namespaces]

    def snapshotters(self) -> dict[str, str | None]:
        """The daemon's snapshotter plugins: id -> None when it loaded, else why not."""
        request = _new("containerd.introspection.PluginsRequest", filters=["type==io.containerd.snapshotter.v1"])
        r = self._call(
            "/containerd.services.introspection.v1.Introspection/Plugins",
            request,
            "containerd.introspection.PluginsResponse",
        )
        return {p.id: (p.init_err.message or None) if p.HasField("init_err") else None for p in r.plugins}

    def snapshotter_root(self, snapshotter: str) -> str | None:
        """The directory the snapshotter keeps its snapshots under, as the plugin exports it (`root`)."""
        request = _new("containerd.introspection.PluginsRequest", filters=[f"id=={snapshotter}"])
        r = self._call(
            "/containerd.services.introspection.v1.Introspection/Plugins",
            request,
            "containerd.introspection.PluginsResponse",
        )
        roots = [p.exports.get("root") for p in r.plugins if p.type == "io.containerd.snapshotter.v1"]
        return roots[0] if roots and roots[0] else None

    # --- content, images and containers: what `ctr` makes and reads ---------------------

    def _stream(self, method: str, request: Any, response: str) -> Iterator[Any]:
        rpc = self._channel.unary_stream(
            method, request_serializer=type(request).SerializeToString, response_deserializer=_M[response].FromString
        )
        try:
            yield from rpc(request, metadata=self._metadata, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _os_error(method, exc) from None

    def content_sizes(self) -> dict[str, int]:
        """Every blob the namespace's content store holds: digest -> its size, as the store recorded it."""
        request = _new("containerd.content.ListContentRequest")
        out: dict[str, int] = {}
        for r in self._stream(
            "/containerd.services.content.v1.Content/List", request, "containerd.content.ListContentResponse"
        ):
            for info in r.info:
                out[str(info.digest)] = int(info.size)
        return out

    def read_content(self, digest: str, limit: int) -> bytes:
        """The bytes of blob `digest`, or OSError(EFBIG) if it holds more than `limit` (a blob is untrusted)."""
        request = _new("containerd.content.ReadContentRequest", digest=digest)
        chunks, size = [], 0
        for r in self._stream(
            "/containerd.services.content.v1.Content/Read", request, "containerd.content.ReadContentResponse"
        ):
            size += len(r.data)
            if size > limit:
                raise OSError(errno.EFBIG, f"containerd Read: blob {digest} is larger than {limit} bytes")
            chunks.append(bytes(r.data))
        return b"".join(chunks)

    def image_target(self, name: str) -> Descriptor:
        """The descriptor image `name` points to (its manifest, or an index)."""
        request = _new("containerd.images.GetImageRequest", name=name)
        t = self._call(
            "/containerd.services.images.v1.Images/Get", request, "containerd.images.GetImageResponse"
        ).image.target
        return Descriptor(t.media_type, t.digest, int(t.size))

    def delete_image(self, name: str) -> None:
        """Delete image `name`'s record; `sync`: containerd collects what only it held (blobs, snapshots) first."""
        request = _new("containerd.images.DeleteImageRequest", name=name, sync=True)
        self._call("/containerd.services.images.v1.Images/Delete", request, "containerd.types.Empty")

    def create_container(
        self, container_id: str, image: str, runtime: str, spec: bytes, snapshotter: str, snapshot_key: str
    ) -> None:
        """A container record (what containerd's client's NewContainer writes): its image, runtime name, OCI
        spec (JSON, as `OCI_SPEC_TYPE`) and snapshot."""
        container = _new(
            "containerd.containers.Container",
            id=container_id,
            image=image,
            runtime=_new("containerd.containers.Runtime", name=runtime),
            spec=_new("containerd.containers.Any", type_url=OCI_SPEC_TYPE, value=spec),
            snapshotter=snapshotter,
            snapshot_key=snapshot_key,
        )
        request = _new("containerd.containers.CreateContainerRequest", container=container)
        self._call(
            "/containerd.services.containers.v1.Containers/Create",
            request,
            "containerd.containers.CreateContainerResponse",
        )

    def delete_container(self, container_id: str) -> None:
        request = _new("containerd.containers.DeleteContainerRequest", id=container_id)
        self._call("/containerd.services.containers.v1.Containers/Delete", request, "containerd.types.Empty")

    # --- what a namespace holds: listed to empty it (drivers/_containerd_namespace.py) ---

    def containers(self) -> list[str]:
        """The ids of the namespace's container records."""
        request = _new("containerd.containers.ListContainersRequest")
        method = "/containerd.services.containers.v1.Containers/List"
        return [c.id for c in self._call(method, request, "containerd.containers.ListContainersResponse").containers]

    def images(self) -> list[str]:
        """The names of the namespace's image records."""
        request = _new("containerd.images.ListImagesRequest")
        method = "/containerd.services.images.v1.Images/List"
        return [i.name for i in self._call(method, request, "containerd.images.ListImagesResponse").images]

    def leases(self) -> list[str]:
        """The ids of the namespace's leases (ours, and those a `ctr` command took and did not drop)."""
        request = _new("containerd.leases.ListRequest")
        method = "/containerd.services.leases.v1.Leases/List"
        return [lease.id for lease in self._call(method, request, "containerd.leases.ListResponse").leases]

    def delete_lease(self, lease_id: str) -> None:
        """Delete lease `lease_id`; `sync`: containerd collects what only it held first."""
        request = _new("containerd.leases.DeleteRequest", id=lease_id, sync=True)
        self._call("/containerd.services.leases.v1.Leases/Delete", request, "containerd.types.Empty")

    def snapshots(self, snapshotter: str) -> dict[str, str]:
        """The namespace's snapshots in `snapshotter`: key -> its parent's ("" for none)."""
        request = _new("containerd.snapshots.ListSnapshotsRequest", snapshotter=snapshotter)
        method = "/containerd.services.snapshots.v1.Snapshots/List"
        return {
            str(i.name): str(i.parent)
            for r in self._stream(method, request, "containerd.snapshots.ListSnapshotsResponse")
            for i in r.info
        }

    def ingests(self) -> list[str]:
        """The refs of the namespace's unfinished content writes (a Write cut short)."""
        request = _new("containerd.content.ListStatusesRequest")
        method = "/containerd.services.content.v1.Content/ListStatuses"
        return [s.ref for s in self._call(method, request, "containerd.content.ListStatusesResponse").statuses]

    def abort_ingest(self, ref: str) -> None:
        request = _new("containerd.content.AbortRequest", ref=ref)
        self._call("/containerd.services.content.v1.Content/Abort", request, "containerd.types.Empty")


def _os_error(method: str, exc: grpc.RpcError) -> OSError:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    name = method.rsplit(".", 1)[-1]
    return OSError(_ERRNO.get(code, errno.EIO) if code else errno.EIO, f"containerd {name}: {details}")


def _mounts(raw: Iterable[Any]) -> list[MountSpec]:
    return [MountSpec(m.type, m.source, tuple(m.options)) for m in raw]


def _mount(m: MountSpec) -> Any:
    return _new("containerd.types.Mount", type=m.type, source=m.source, options=list(m.options))


def _descriptor(d: Descriptor) -> Any:
    return _new("containerd.types.Descriptor", media_type=d.media_type, digest=d.digest, size=d.size)
