"""Backing stores on the real kernel: the filesystem asked for, of the size asked, and nothing left after close."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from layerbench.kernel import loopdev, mountinfo
from layerbench.run import backing
from layerbench.run.backing import MIN_SIZE, BackingStore

from ..conftest import ROOT

pytestmark = pytest.mark.mounts
MiB = 1 << 20
SIZE = {"ext4": 96 * MiB, "xfs": 320 * MiB, "btrfs": 256 * MiB}


def _loops_of(image: Path) -> str:
    return subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True, check=True).stdout


def _backing_file(loop: str) -> str | None:
    """The file loop device `loop` is attached to, or None when it is attached to none."""
    try:
        return Path(f"/sys/block/{Path(loop).name}/loop/backing_file").read_text().strip()
    except FileNotFoundError:
        return None


def _mount_on(point: Path) -> mountinfo.Mount:
    (found,) = [m for m in mountinfo.mounts() if m.point == str(point)]
    return found


def _need(fstype: str) -> None:
    if (reason := backing.unavailable(fstype)) is not None:
        pytest.skip(f"{fstype}: {reason}")


@pytest.mark.parametrize("fstype", ["ext4", "xfs", "btrfs"])
def test_a_loop_store_is_the_filesystem_and_size_asked_and_close_leaves_nothing(fstype: str, tmp_path: Path) -> None:
    _need(fstype)
    store = BackingStore(tmp_path, fstype, SIZE[fstype])
    with store as mnt:
        assert store.loop is not None and store.loop in _loops_of(store.image)
        mount = _mount_on(mnt)
        assert (mount.fstype, mount.source) == (fstype, store.loop)
        assert mount.has("nodev", "nosuid")
        assert store.image.stat().st_size == SIZE[fstype]
        st = os.statvfs(mnt)
        assert 0.75 * SIZE[fstype] <= st.f_blocks * st.f_frsize <= SIZE[fstype]  # the filesystem fills the file
        before = store.usage()
        (mnt / "data").write_bytes(os.urandom(8 * MiB))
        after = store.usage()
        st = os.statvfs(mnt)  # read right after usage()'s syncfs: the same figure
        assert after.bytes == (st.f_blocks - st.f_bfree) * st.f_frsize
        assert after.bytes - before.bytes >= 8 * MiB
        if fstype == "btrfs":
            assert after.inodes is None  # btrfs has no inode count
        else:
            assert after.inodes is not None and before.inodes is not None and after.inodes == before.inodes + 1
        loop = store.loop
    assert mountinfo.points_below(str(tmp_path)) == []
    assert _loops_of(store.image) == "" and str(store.image) not in (_backing_file(loop) or "")  # detached
    assert not store.image.exists() and not store.mountpoint.exists()
    store.close()  # idempotent


def test_a_store_smaller_than_its_filesystem_allows_is_made_at_the_minimum(tmp_path: Path) -> None:
    _need("ext4")
    with BackingStore(tmp_path, "ext4", MiB) as mnt:
        assert os.path.getsize(tmp_path / "backing.ext4.img") == MIN_SIZE["ext4"]
        assert os.path.ismount(mnt)


@pytest.mark.parametrize("mode", ["direct", "buffered"])
def test_the_loop_direct_io_state_is_read_back_from_the_kernel(mode: str, tmp_path: Path) -> None:
    _need("ext4")
    with BackingStore(tmp_path, "ext4", 64 * MiB, loop_io=mode) as _:
        store_loop = _loops_of(tmp_path / "backing.ext4.img").split(":", 1)[0]
        dio = Path(f"/sys/block/{Path(store_loop).name}/loop/dio").read_text().strip() == "1"
        assert backing.loop_direct_io(store_loop) is dio
        if mode == "buffered":
            assert not dio  # never asked for


def test_the_direct_io_attribute_is_the_stores_own(tmp_path: Path) -> None:
    _need("ext4")
    store = BackingStore(tmp_path, "ext4", 64 * MiB)
    with store:
        assert store.loop is not None
        assert store.direct_io is (Path(f"/sys/block/{Path(store.loop).name}/loop/dio").read_text().strip() == "1")
    assert store.loop is None


def test_a_dir_store_counts_bytes_and_inodes_with_a_walk(tmp_path: Path) -> None:
    store = BackingStore(tmp_path, "dir", 0)
    with store as mnt:
        assert store.loop is None and store.direct_io is None and not store.image.exists()
        if ROOT:  # bound onto itself, so it is nodev,nosuid like every other store
            assert _mount_on(mnt).has("nodev", "nosuid")
        empty = store.usage()
        (mnt / "sub").mkdir()
        (mnt / "sub" / "a").write_bytes(os.urandom(MiB))
        os.link(mnt / "sub" / "a", mnt / "hardlink")  # one inode, counted once
        used = store.usage()
        assert used.inodes == (empty.inodes or 0) + 2  # sub/ and a
        assert used.bytes == backing.allocated_bytes(mnt)
        assert MiB <= used.bytes - empty.bytes < 2 * MiB
    assert mountinfo.points_below(str(tmp_path)) == [] and not store.mountpoint.exists()


def _thousand_small_writes(tmp_path: Path, fstype: str, size: int) -> int:
    """The bytes 1,000 files of 512 bytes add to a fresh store of `fstype` and `size`."""
    with BackingStore(tmp_path / f"{fstype}-{size}", fstype, size) as mnt:
        layer = mnt / "layer"
        layer.mkdir()
        before = backing.usage(mnt).bytes
        for i in range(1000):
            (layer / f"f{i}").write_bytes(b"x" * 512)
        return backing.usage(mnt).bytes - before


@pytest.mark.parametrize("fstype", ["ext4", "xfs", "btrfs"])
def test_the_same_writes_take_the_same_space_on_a_small_and_a_large_store(fstype: str, tmp_path: Path) -> None:
    # mke2fs gave a store under 512 MiB 1 KiB blocks (the "small" type) and a larger one 4 KiB blocks: the
    # same 1,000 x 512-byte files were a 1.0 MiB layer on one and 3.9 MiB on the other (backing.MKFS_OPTIONS)
    _need(fstype)
    small = _thousand_small_writes(tmp_path, fstype, max(MIN_SIZE[fstype], 300 * MiB))
    large = _thousand_small_writes(tmp_path, fstype, 2048 * MiB)
    if fstype == "btrfs":  # inline in metadata; its trees' shape varies a little from run to run, either size
        assert abs(small - large) <= 0.15 * large, (small, large)
    else:
        assert small == large, (small, large)
    if fstype == "ext4":
        assert small >= 1000 * 4096  # a 4 KiB block per file, whatever the size of the store
    assert backing.mkfs_options(fstype) == " ".join(backing.MKFS_OPTIONS[fstype]) and backing.mkfs_options("dir") == ""


def test_a_loop_device_losetup_could_not_detach_stays_in_the_ledger_for_cleanup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`losetup -d` killed by a signal meant for the run (a fleet worker stopped with its process group)
    detaches nothing: close says so, keeps the file, and `cleanup` detaches the device from the ledger."""
    from layerbench.run.ledger import LEDGER_NAME, Ledger, release_abandoned

    run_dir = tmp_path / "work" / "run-1"
    run_dir.mkdir(parents=True, mode=0o700)
    (tmp_path / "work").chmod(0o700)
    ledger = Ledger(run_dir / LEDGER_NAME).open()
    store = BackingStore(run_dir / "cell", "ext4", SIZE["ext4"], ledger=ledger)
    store.open()
    loop = store.loop
    assert loop is not None
    real_run = subprocess.run

    def killed_losetup(args: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
        if args[:2] == ["losetup", "-d"]:
            return subprocess.CompletedProcess(args, -15)  # as a SIGTERMed losetup returns: nothing done
        return real_run(args, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr(loopdev.subprocess, "run", killed_losetup)
    with pytest.raises(OSError, match="losetup -d failed"):
        store.close()
    assert _backing_file(loop) == str(store.image)  # still attached, and its file still there
    ledger.close()
    actions, _ = release_abandoned(tmp_path / "work")  # cleanup's losetup -d fails too: the entry stays
    assert any("losetup -d failed" in a for a in actions), actions
    assert (run_dir / LEDGER_NAME).exists() and _backing_file(loop) == str(store.image)
    monkeypatch.undo()
    actions, live = release_abandoned(tmp_path / "work")
    assert not live and any(a.startswith("detached") for a in actions), actions
    assert _backing_file(loop) is None
    assert not _loops_of(store.image) if store.image.exists() else True
