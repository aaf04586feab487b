"""containerd's answers are untrusted: a `--containerd-address` daemon must be root's, and what its Snapshots.Mounts
returns is mounted only when it names what the snapshotter asked for keeps (drivers/_containerd_mounts.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from layerbench.drivers._containerd_mounts import Allowed, check_specs, mount_specs
from layerbench.drivers.containerd_api import MountSpec
from layerbench.kernel import mountinfo, syscalls
from layerbench.plugins import default_plugins

_NOBODY = 65534


def _served_by_nobody(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A unix socket in `folder` listened on by a process of uid nobody (a user's daemon; bound before it drops
    root, as the socket file's owner is the test's to set)."""
    address = str(folder / "user.sock")
    code = (
        "import os, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])\n"
        f"os.setgid({_NOBODY}); os.setuid({_NOBODY}); s.listen(8)\n"
        "print('ok', flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, address], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ok"
    return proc, address


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a socket of another user's)")
def test_a_users_daemon_is_refused_by_probe(tmp_path: Path) -> None:
    proc, address = _served_by_nobody(tmp_path)
    try:
        cls = default_plugins().driver("containerd/overlayfs").at(address)
        os.chown(address, _NOBODY, _NOBODY)
        reason = cls.probe()
        assert reason is not None and "another user's" in reason, reason
        # the socket root's, still served by nobody: the peer's credentials refuse it
        os.chown(address, 0, 0)
        reason = cls.probe()
        assert reason is not None and f"uid {_NOBODY}, not root" in reason, reason
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_a_socket_another_user_could_swap_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "open"
    folder.mkdir()
    os.chmod(folder, 0o777)  # writable by others, not sticky: a user could put another socket there
    address = str(folder / "c.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(address)
        s.listen(1)
        reason = default_plugins().driver("containerd/native").at(address).probe()
    assert reason is not None and "another user could swap the socket" in reason, reason


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "io.containerd.snapshotter.v1.overlayfs"
    for d in ("snapshots/1/fs", "snapshots/2/fs", "snapshots/2/work"):
        (root / d).mkdir(parents=True)
    return root


HOSTILE = [
    ("overlay", "overlay", ("lowerdir=/etc", "upperdir={r}/snapshots/2/fs", "workdir={r}/snapshots/2/work")),
    ("overlay", "overlay", ("lowerdir={r}/snapshots/1/fs:/root", "upperdir={r}/2/fs", "workdir={r}/2/work")),
    ("overlay", "overlay", ("lowerdir={r}/snapshots/1/fs/../../../../etc",)),
    ("overlay", "overlay", ("lowerdir={r}/snapshots/1/fs,lowerdir=/etc",)),
    ("overlay", "overlay", ("lowerdir={r}/snapshots/1/fs", "upperdir=/", "workdir={r}/snapshots/2/work")),
    ("overlay", "overlay", ("lowerdir={r}/snapshots/1/fs", "redirect_dir=on", "metacopy=on")),
    ("bind", "/", ("rbind", "rw")),
    ("bind", "{r}/snapshots/1/fs", ("rw",)),  # no bind: a filesystem mount of a path
    ("ext4", "/dev/sda1", ("rw",)),
    ("tmpfs", "tmpfs", ("rw",)),
]


@pytest.mark.mounts
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts)")
@pytest.mark.parametrize(("kind", "source", "options"), HOSTILE)
def test_a_mount_outside_the_snapshotters_root_is_refused_and_nothing_mounted(
    tmp_path: Path, kind: str, source: str, options: tuple[str, ...]
) -> None:
    root = _root(tmp_path)
    target = tmp_path / "rootfs"
    target.mkdir()
    spec = MountSpec(kind, source.format(r=root), tuple(o.format(r=root) for o in options))
    try:
        with pytest.raises(OSError, match="containerd's"):
            mount_specs([spec], str(target), Allowed.of("overlayfs", root))
    finally:
        if str(target) in mountinfo.mount_points():
            syscalls.umount(str(target))
            pytest.fail(f"{spec} was mounted")


@pytest.mark.mounts
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts)")
def test_containerds_own_mounts_still_mount(tmp_path: Path) -> None:
    root = _root(tmp_path)
    target = tmp_path / "rootfs"
    target.mkdir()
    (root / "snapshots/1/fs/hello").write_text("hi")
    r = str(root)
    overlay = MountSpec(
        "overlay",
        "overlay",
        ("index=off", f"workdir={r}/snapshots/2/work", f"upperdir={r}/snapshots/2/fs", f"lowerdir={r}/snapshots/1/fs"),
    )
    bind = MountSpec("bind", f"{r}/snapshots/1/fs", ("rbind", "ro"))
    for spec in (overlay, bind):
        assert mount_specs([spec], str(target), Allowed.of("overlayfs", root)) in ("mount(2)", "bind")
        try:
            assert (target / "hello").read_text() == "hi"
            assert [m for m in mountinfo.mounts() if m.point == str(target)][-1].has("nodev", "nosuid")
        finally:
            syscalls.umount(str(target))


def test_a_mount_type_or_snapshotter_mismatch_is_refused() -> None:
    bind = MountSpec("bind", "/x/snapshots/1", ("rbind",))
    check_specs([bind], Allowed("native", "/x"))  # native's own
    with pytest.raises(OSError, match="returned a 'bind' mount"):
        check_specs([bind], Allowed("btrfs", "/x", "/dev/loop0"))
    with pytest.raises(OSError, match="not the device holding"):
        check_specs([MountSpec("btrfs", "/dev/null", ("subvolid=256",))], Allowed("btrfs", "/x", "/dev/loop0"))
    with pytest.raises(OSError, match="option 'subvol=/'"):
        check_specs([MountSpec("btrfs", "/dev/loop0", ("subvol=/",))], Allowed("btrfs", "/x", "/dev/loop0"))
    with pytest.raises(OSError, match="2 mounts"):
        check_specs([bind, bind], Allowed("native", "/x"))


@pytest.mark.mounts
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (containerd)")
def test_a_daemon_directory_with_a_backslash_and_a_quote_is_the_one_containerd_uses(tmp_path: Path) -> None:
    """Our daemon's config.toml took its root, state and socket paths unquoted: a `\\t` in the work root was read
    as a tab (containerd's root in another directory, one any user may make under /var/tmp) and a `"` ended the
    string (containerd refused its config)."""
    from layerbench.drivers.containerd_daemon import ContainerdDaemon
    from tests.conftest import require

    require("containerd/native")
    folder = tmp_path / 'd\\tx"q'
    folder.mkdir()
    with ContainerdDaemon(folder) as address:
        assert address.startswith(str(folder)) or "/proc/self/fd/" in address
        assert (folder / "root" / "io.containerd.metadata.v1.bolt").is_dir()
    assert not (tmp_path / 'd\tx"q').exists()
