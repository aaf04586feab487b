"""Our namespace on a user's containerd (`--containerd-address`): its name, its ledger entry, the daemon's trust
checks, and emptying it — after a cell (`close`) and, for a run that died, in `layerbench cleanup`.

A cell on a user's daemon makes everything in a namespace of its own, `layerbench-<run id>-<hex>` (the run id:
run/ledger.run_id, from the run's ledger path), written in the run's ledger as `containerd-namespace`,
`<namespace>@<socket>`, before anything is made there, and released once `close` has emptied and deleted it.
`cleanup` (`release_entry`, handed to run/ledger.release_abandoned for that kind) acts on such an entry only
when the namespace carries the id of the ledger naming it, and only on a daemon that passes the same checks
the drivers' probe makes (`refused`: a daemon of root's, its socket root's in directories no other user can
swap); it then empties the namespace as `close` does (`clear_namespace`) and deletes it. A daemon gone or
refused is one line and the entry is dropped: nothing of ours can be released there.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import secrets
import socket
import stat
import struct
from collections.abc import Callable

from layerbench.kernel import safety
from layerbench.run.ledger import Skip

from .containerd_api import Containerd

__all__ = ["LEDGER_KIND", "namespace_name", "ledger_entry", "refused", "clear_namespace", "release_entry"]

LEDGER_KIND = "containerd-namespace"
PREFIX = "layerbench-"
#: how long `cleanup` waits for a daemon that accepted the connection to answer
_CONNECT_S = 10.0


def namespace_name(run_id: str | None) -> str:
    """A new namespace of ours: `layerbench-<run id>-<12 hex>`, or `layerbench-<12 hex>` outside a run."""
    return f"{PREFIX}{run_id}-{secrets.token_hex(6)}" if run_id else f"{PREFIX}{secrets.token_hex(6)}"


def ledger_entry(namespace: str, address: str) -> str:
    """The ledger's path of our namespace on the daemon at `address`: `<namespace>@<absolute socket path>`
    (a namespace name has no `@`)."""
    return f"{namespace}@{os.path.abspath(address)}"


def refused(address: str) -> str | None:
    """Why the daemon at `address` is not to be used, or None. Its answers are acted on as root (the mounts
    Snapshots.Mounts names are mounted, a container started on them, and what it lists is removed), so it
    must be a daemon of root's: a unix socket owned by root (or us), in directories no other user can swap
    it in, and the process serving it (its peer credentials, SO_PEERCRED) running as root."""
    try:
        if not stat.S_ISSOCK(os.stat(address).st_mode):
            return "not a unix socket"
        st = os.lstat(address)
    except OSError as exc:
        return exc.strerror or str(exc)
    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid}: a daemon of another user's; its mounts would be made as root"
    if (why := safety.ancestors_error(os.path.abspath(address))) is not None:
        return f"{why}: another user could swap the socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        try:
            sock.connect(address)
        except OSError as exc:
            return f"cannot connect: {exc.strerror or exc}"
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    if uid not in (0, os.geteuid()):
        return f"served by a process of uid {uid}, not root: its mounts would be made as root"
    return None


def clear_namespace(client: Containerd) -> list[str]:
    """Empty `client`'s namespace and delete it: container records, image records (containerd collects their
    blobs and snapshots), leases (ours, a `ctr` command's left by a kill), unfinished writes, the snapshots of
    every snapshotter (children before their parents), the blobs left; what it removed, by kind."""
    done: list[str] = []

    def each(kind: str, items: list[str], remove: Callable[[str], object]) -> None:
        gone = 0
        for item in items:
            try:
                remove(item)
                gone += 1
            except FileNotFoundError:
                pass  # collected with what held it
        if gone:
            done.append(f"{gone} {kind}")

    each("containers", client.containers(), client.delete_container)
    each("images", client.images(), client.delete_image)
    each("leases", client.leases(), client.delete_lease)
    each("unfinished writes", client.ingests(), client.abort_ingest)
    for snapshotter, why in sorted(client.snapshotters().items()):
        if why is None:
            keys = _leaves_first(client.snapshots(snapshotter))
            each(f"{snapshotter} snapshots", keys, functools.partial(client.remove, snapshotter))
    each("blobs", sorted(client.content_sizes()), client.delete_content)
    try:
        client.delete_namespace()
    except FileNotFoundError:
        pass  # never made: a set-up that failed before its first write there
    return done


def _leaves_first(parents: dict[str, str]) -> list[str]:
    """The snapshots `parents` names (key -> parent), each after every snapshot standing on it."""
    order: list[str] = []
    left = dict(parents)
    while left:
        standing_on = set(left.values())
        leaves = sorted(k for k in left if k not in standing_on)
        if not leaves:  # a cycle containerd would never make: remove the rest in any order
            leaves = sorted(left)
        order += leaves
        for key in leaves:
            del left[key]
    return order


_ENTRY = re.compile(r"(?P<namespace>[^@]+)@(?P<address>/.+)")


def release_entry(entry: str, run_id: str) -> str | None:
    """`cleanup`'s release of a `containerd-namespace` entry of the dead run `run_id` (module docstring):
    what it removed, one line naming why nothing could be, or `Skip` (a namespace not the run's, or one the
    daemon would not delete: the entry stays)."""
    m = _ENTRY.fullmatch(entry)
    if m is None or "\0" in entry:
        raise Skip("not a namespace as the ledger names one (<namespace>@<socket path>)")
    namespace, address = m["namespace"], m["address"]
    if re.fullmatch(rf"{re.escape(PREFIX)}{re.escape(run_id)}-[0-9a-f]{{12}}", namespace) is None:
        raise Skip(f"not a namespace this run made (layerbench-{run_id}-<hex>)")
    if os.path.normpath(address) != address:
        raise Skip("not an absolute, normal socket path")
    if (why := refused(address)) is not None:
        return f"containerd at {address}: {why}; namespace {namespace} not released there"
    client = Containerd(address, namespace, timeout_s=600)
    try:
        client.wait_ready(_CONNECT_S)
        if namespace not in client.namespaces():
            return None  # the run removed it (its record did not make it to the ledger) or someone else did
        done = clear_namespace(client)
    except OSError as exc:
        if exc.errno in (errno.ETIMEDOUT, errno.ECONNREFUSED):
            return f"containerd at {address}: {exc.strerror or exc}; namespace {namespace} not released there"
        raise Skip(f"containerd at {address}: {exc.strerror or exc}") from None
    finally:
        client.close()
    what = f" ({', '.join(done)})" if done else ""
    return f"removed containerd namespace {namespace}{what} at {address}"
