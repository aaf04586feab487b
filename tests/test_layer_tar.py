"""Applying one layer: OCI semantics on FULL and DIFF roots, and every unsafe archive refused."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from layerbench.driver import LayerFormat
from layerbench.errors import UserError
from layerbench.images import layer_apply
from layerbench.images.layer_stream import SizeLimit, free_disk_limit
from layerbench.images.layer_tar import LowerTree, apply_host_dir, apply_tar_layer
from layerbench.kernel.treecopy import copy_tree

from .image_files import (
    DEV,
    DIFF,
    FULL,
    MTIME,
    ROOT,
    WH,
    D,
    F,
    H,
    Member,
    S,
    needs_root,
    tar_bytes,
    tar_info,
)


def apply(root: Path, fmt: LayerFormat, *members: Member, **kw: Any):
    return apply_tar_layer(root, io.BytesIO(tar_bytes(*members)), fmt, name="layer.tar", **kw)


def child(tmp_path: Path, parent: Path, fmt: LayerFormat, name: str = "child") -> Path:
    """The directory a driver would hand out for a child of `parent`."""
    out = tmp_path / name
    if fmt is FULL:
        copy_tree(str(parent), str(out))
    else:
        out.mkdir()
    return out


@pytest.fixture(params=[FULL, DIFF], ids=["full", "diff"])
def fmt(request: pytest.FixtureRequest) -> LayerFormat:
    return request.param


# -- semantics ------------------------------------------------------------------------------


def test_files_dirs_links_modes_and_times(tmp_path: Path, fmt: LayerFormat) -> None:
    root = tmp_path / "root"
    root.mkdir()
    stats = apply(
        root,
        fmt,
        D("./"),
        D("usr/", 0o755),
        D("usr/bin/"),
        D("tmp/", 0o1777),
        F("usr/bin/su", b"su!", 0o4755),
        F("usr/bin/g", b"g", 0o2711),
        S("usr/bin/sh", "su"),
        H("usr/bin/su2", "usr/bin/su"),
        DEV("run/fifo", tarfile.FIFOTYPE, mode=0o640),
        F("deep/er/file", b"implicit parents"),
    )
    su = (root / "usr/bin/su").lstat()
    assert (root / "usr/bin/su").read_bytes() == b"su!"
    assert stat.S_IMODE(su.st_mode) == 0o4755 and su.st_mtime == MTIME
    assert stat.S_IMODE((root / "usr/bin/g").stat().st_mode) == 0o2711
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert (root / "usr").stat().st_mtime == MTIME  # dir times set after their children
    assert os.readlink(root / "usr/bin/sh") == "su" and (root / "usr/bin/sh").lstat().st_mtime == MTIME
    assert (root / "usr/bin/su2").stat().st_ino == su.st_ino
    assert stat.S_ISFIFO((root / "run/fifo").lstat().st_mode)
    assert stat.S_IMODE((root / "run/fifo").lstat().st_mode) == 0o640
    assert (root / "deep/er/file").read_bytes() == b"implicit parents"
    assert (stats.files, stats.symlinks, stats.hardlinks, stats.devices, stats.bytes) == (3, 1, 1, 1, 20)


@needs_root
def test_ownership_devices_and_xattrs(tmp_path: Path, fmt: LayerFormat) -> None:
    root = tmp_path / "root"
    root.mkdir()
    stats = apply(
        root,
        fmt,
        D("d/", 0o705, uid=1, gid=2),
        F("d/f", b"x", 0o4755, uid=3, gid=4, xattrs={"user.k": "v"}),
        DEV("dev/null", tarfile.CHRTYPE, 1, 3, 0o666),
        DEV("dev/loop9", tarfile.BLKTYPE, 7, 9),
        F("evil", b"", xattrs={"trusted.overlay.redirect": "/etc"}),
    )
    d, f = (root / "d").stat(), (root / "d/f").stat()
    assert (d.st_uid, d.st_gid, stat.S_IMODE(d.st_mode)) == (1, 2, 0o705)
    assert (f.st_uid, f.st_gid, stat.S_IMODE(f.st_mode)) == (3, 4, 0o4755)  # setuid survives chown
    assert os.getxattr(root / "d/f", "user.k") == b"v"
    null = (root / "dev/null").lstat()
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_ISBLK((root / "dev/loop9").lstat().st_mode)
    assert "trusted.overlay.redirect" not in os.listxattr(root / "evil")  # a layer never steers overlayfs
    assert any("trusted.overlay.redirect" in s for s in stats.skipped)


@pytest.mark.parametrize("compress", [None, "gzip", "zstd"])
def test_compression_is_detected_by_magic(tmp_path: Path, compress: str | None) -> None:
    data = tar_bytes(D("a/"), F("a/f", b"hello"), compress=compress)
    apply_tar_layer(tmp_path, io.BytesIO(data), FULL)
    assert (tmp_path / "a/f").read_bytes() == b"hello"


def _lower(tmp_path: Path) -> Path:
    lower = tmp_path / "lower"
    lower.mkdir()
    apply(
        lower,
        FULL,
        D("d/", 0o700),
        F("d/a", b"a"),
        D("d/sub/"),
        F("d/sub/b", b"b"),
        F("keep", b"k"),
        F("f", b"f"),
        S("ln", "keep"),
    )
    return lower


def test_full_whiteouts_delete_files_dirs_and_links(tmp_path: Path) -> None:
    root = child(tmp_path, _lower(tmp_path), FULL)
    stats = apply(root, FULL, WH(".wh.f"), WH("d/.wh.sub"), WH(".wh.ln"), WH(".wh.missing"), WH("nodir/.wh.x"))
    assert sorted(os.listdir(root)) == ["d", "keep"] and os.listdir(root / "d") == ["a"]
    assert (root / "keep").read_bytes() == b"k"  # the symlink went, not its target
    assert not (tmp_path / "child/nodir").exists()  # a whiteout makes no parents on FULL
    assert stats.whiteouts == 5


def test_full_opaque_empties_lower_children_before_this_layers_entries(tmp_path: Path) -> None:
    root = child(tmp_path, _lower(tmp_path), FULL)
    apply(
        root,
        FULL,
        D("d/", 0o755),
        F("d/new", b"n"),
        D("d/sub/"),
        F("d/sub/c", b"c"),
        WH("d/.wh..wh..opq"),
        F("d/after", b"z"),
    )
    assert sorted(os.listdir(root / "d")) == ["after", "new", "sub"]
    assert os.listdir(root / "d/sub") == ["c"]  # the lower d/sub/b is hidden, this layer's c stays
    assert stat.S_IMODE((root / "d").stat().st_mode) == 0o755


def test_whiteout_hides_lower_only_not_this_layers_entry(tmp_path: Path, fmt: LayerFormat) -> None:
    root = child(tmp_path, _lower(tmp_path), fmt)
    apply(root, fmt, F("f", b"new"), WH(".wh.f"))
    assert (root / "f").read_bytes() == b"new"


@needs_root
def test_diff_whiteout_is_a_0_0_char_device_and_opaque_an_xattr(tmp_path: Path) -> None:
    root = tmp_path / "diff"
    root.mkdir()
    stats = apply(root, DIFF, D("d/"), WH("d/.wh..wh..opq"), F("d/new", b"n"), WH(".wh.f"), WH("x/y/.wh.z"))
    for path in (root / "f", root / "x/y/z"):
        st = path.lstat()
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(root / "d", "trusted.overlay.opaque") == b"y"
    assert os.listdir(root / "d") == ["new"]
    assert (stats.whiteouts, stats.opaques) == (2, 1)


@needs_root
def test_diff_lower_dir_removed_and_recreated_becomes_opaque(tmp_path: Path) -> None:
    for order in ([WH(".wh.d"), D("d/"), F("d/c", b"c")], [D("d/"), F("d/c", b"c"), WH(".wh.d")]):
        root = tmp_path / f"diff{len(os.listdir(tmp_path))}"
        root.mkdir()
        apply(root, DIFF, *order)
        assert os.getxattr(root / "d", "trusted.overlay.opaque") == b"y"
        assert os.listdir(root / "d") == ["c"]


def test_full_lower_dir_removed_and_recreated(tmp_path: Path) -> None:
    lower = _lower(tmp_path)
    for i, order in enumerate(([WH(".wh.d"), D("d/"), F("d/c", b"c")], [D("d/"), F("d/c", b"c"), WH(".wh.d")])):
        root = child(tmp_path, lower, FULL, f"c{i}")
        apply(root, FULL, *order)
        assert os.listdir(root / "d") == ["c"]


def test_entry_over_existing_path(tmp_path: Path) -> None:
    root = child(tmp_path, _lower(tmp_path), FULL)
    apply(
        root,
        FULL,
        D("d/", 0o751, mtime=5),
        F("keep", b"replaced", 0o600),
        D("f/"),
        F("f/inner", b"i"),
        F("d/sub", b"file over dir"),
        F("ln", b"file over symlink"),
    )
    assert stat.S_IMODE((root / "d").stat().st_mode) == 0o751 and (root / "d").stat().st_mtime == 5
    assert (root / "d/a").read_bytes() == b"a"  # two dirs merge: children kept
    assert (root / "d/sub").read_bytes() == b"file over dir"
    assert (root / "f/inner").read_bytes() == b"i"
    assert (root / "keep").read_bytes() == b"replaced" and not (root / "ln").is_symlink()
    assert (tmp_path / "lower/keep").read_bytes() == b"k"  # the parent's copy is untouched


def test_replacing_a_hardlinked_file_leaves_its_twin(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    lower.mkdir()
    apply(lower, FULL, F("a", b"same"), H("b", "a"))
    root = child(tmp_path, lower, FULL)
    apply(root, FULL, F("a", b"new"))
    assert (root / "a").read_bytes() == b"new" and (root / "b").read_bytes() == b"same"


def test_aufs_metadata_is_skipped(tmp_path: Path) -> None:
    stats = apply(tmp_path, FULL, D(".wh..wh.plnk/"), F(".wh..wh.aufs"), F("f", b"x"))
    assert os.listdir(tmp_path) == ["f"] and len(stats.skipped) == 2


def test_absolute_symlinks_can_be_rewritten_inside_the_root(tmp_path: Path) -> None:
    apply(
        tmp_path,
        FULL,
        S("etc/localtime", "/usr/share/zoneinfo/UTC"),
        S("top", "/"),
        S("a/b/c", "/"),
        symlinks="relative",
    )
    assert os.readlink(tmp_path / "etc/localtime") == "../usr/share/zoneinfo/UTC"
    assert os.readlink(tmp_path / "top") == "." and os.readlink(tmp_path / "a/b/c") == "../.."


def test_relative_symlinks_inside_the_root_are_kept(tmp_path: Path) -> None:
    apply(tmp_path, FULL, S("etc/os-release", "../usr/lib/os-release"), S("a/b/up", "../.."), S("here", "./x/y"))
    assert os.readlink(tmp_path / "etc/os-release") == "../usr/lib/os-release"
    assert os.readlink(tmp_path / "a/b/up") == "../.."


@pytest.mark.parametrize(
    "data, what",
    [
        (b"not a tar at all" * 100, "not a readable layer tar"),
        (gzip.compress(b"x" * 1000)[:30], "not a readable layer tar"),
        (tar_bytes(F("big", b"y" * 5000))[:2048], "not a readable layer tar|truncated"),
    ],
)
def test_malformed_streams_are_one_line_errors(tmp_path: Path, data: bytes, what: str) -> None:
    with pytest.raises(UserError, match=what) as exc:
        apply_tar_layer(tmp_path, io.BytesIO(data), FULL, name="bad.tar")
    assert str(exc.value).startswith("bad.tar: ") and "\n" not in str(exc.value)


def test_host_dir_is_one_layer_copied_with_metadata(tmp_path: Path, fmt: LayerFormat) -> None:
    src = tmp_path / "src"
    (src / "dir").mkdir(parents=True)
    (src / "dir/f").write_bytes(b"hello" * 100)
    os.chmod(src / "dir/f", 0o4750)
    os.link(src / "dir/f", src / "hard")
    os.symlink("dir/f", src / "link")
    (src / ".wh.literal").write_bytes(b"not a whiteout here")
    os.utime(src / "dir", (MTIME, MTIME))
    root = child(tmp_path, _lower(tmp_path), fmt)
    stats = apply_host_dir(root, src, fmt)
    f = (root / "dir/f").stat()
    assert (root / "dir/f").read_bytes() == b"hello" * 100 and stat.S_IMODE(f.st_mode) == 0o4750
    assert f.st_ino != (src / "dir/f").stat().st_ino and (root / "hard").stat().st_ino == f.st_ino
    assert os.readlink(root / "link") == "dir/f" and (root / ".wh.literal").is_file()
    assert (root / "dir").stat().st_mtime == MTIME
    assert stats.hardlinks == 1 and stats.bytes == 500 + len(b"not a whiteout here")
    if fmt is FULL:
        assert (root / "keep").read_bytes() == b"k"


def test_host_dir_absolute_symlink_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.symlink("/etc/passwd", src / "pw")
    with pytest.raises(UserError, match="'pw': symlink target '/etc/passwd' is absolute"):
        apply_host_dir(tmp_path, src, FULL)


# -- unsafe archives: refused, nothing outside the root -------------------------------------


@pytest.fixture
def jail(tmp_path: Path, fmt: LayerFormat) -> tuple[Path, Path, LayerFormat]:
    """A layer root with a sentinel directory beside it holding one file."""
    if fmt is DIFF and not ROOT:
        pytest.skip("DIFF whiteouts need root")
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "secret").write_bytes(b"secret")
    os.chmod(sentinel, 0o750)
    root = tmp_path / "root"
    root.mkdir()
    (root / "inside").mkdir()
    (root / "inside/old").write_bytes(b"old")
    return root, sentinel, fmt


def _untouched(root: Path, sentinel: Path) -> None:
    tmp = root.parent
    assert sorted(os.listdir(tmp)) == ["root", "sentinel"]
    assert os.listdir(sentinel) == ["secret"]
    st = (sentinel / "secret").lstat()
    assert (sentinel / "secret").read_bytes() == b"secret" and st.st_nlink == 1
    assert stat.S_IMODE(sentinel.stat().st_mode) == 0o750
    assert (root / "inside/old").read_bytes() == b"old"  # nothing already applied is corrupted


def _refused(root: Path, sentinel: Path, fmt: LayerFormat, match: str, *members: Member) -> None:
    with pytest.raises(UserError, match=match) as exc:
        apply(root, fmt, F("inside/first", b"applied before"), *members)
    assert str(exc.value).startswith("layer.tar: entry ") and "\n" not in str(exc.value)
    assert (root / "inside/first").read_bytes() == b"applied before"
    _untouched(root, sentinel)


def test_unsafe_absolute_path(jail: tuple[Path, Path, LayerFormat]) -> None:
    root, sentinel, fmt = jail
    _refused(root, sentinel, fmt, "absolute path .*escapes the layer root", F(str(sentinel / "x"), b"pwned"))


@pytest.mark.parametrize("name", ["../sentinel/x", "inside/../../sentinel/x", "./../sentinel/secret"])
def test_unsafe_dotdot_path(jail: tuple[Path, Path, LayerFormat], name: str) -> None:
    root, sentinel, fmt = jail
    _refused(
        root, sentinel, fmt, rf"entry '{name}': path .*'\.\.' component: path escapes the layer root", F(name, b"pwned")
    )


def test_unsafe_dotdot_directory_and_symlink_names(jail: tuple[Path, Path, LayerFormat]) -> None:
    root, sentinel, fmt = jail
    _refused(root, sentinel, fmt, "escapes the layer root", D("../sentinel/newdir/"))
    _refused(root, sentinel, fmt, "escapes the layer root", S("../sentinel/l", "x"))


def test_unsafe_symlink_absolute_target(jail: tuple[Path, Path, LayerFormat]) -> None:
    root, sentinel, fmt = jail
    _refused(
        root, sentinel, fmt, "'evil': symlink target .* is absolute", S("evil", str(sentinel)), F("evil/x", b"pwned")
    )
    assert not (root / "evil").exists()


@pytest.mark.parametrize(
    "name, target", [("evil", "../sentinel"), ("a/b/evil", "../../../sentinel/secret"), ("evil", "..")]
)
def test_unsafe_symlink_relative_climbing_out(jail: tuple[Path, Path, LayerFormat], name: str, target: str) -> None:
    root, sentinel, fmt = jail
    _refused(root, sentinel, fmt, "climbs out of the layer root", S(name, target), F(f"{name}/x", b"pwned"))


def test_unsafe_symlink_dotdot_after_a_name(jail: tuple[Path, Path, LayerFormat]) -> None:
    # 'self -> .' is inside; 'self/../sentinel' looks inside lexically but resolves outside
    root, sentinel, fmt = jail
    _refused(
        root,
        sentinel,
        fmt,
        "'\\.\\.' after a name",
        S("self", "."),
        S("evil", "self/../sentinel"),
        F("evil/x", b"pwned"),
    )


def test_unsafe_symlinked_parent_from_this_layer(jail: tuple[Path, Path, LayerFormat]) -> None:
    root, sentinel, fmt = jail
    _refused(root, sentinel, fmt, "parent 'lnk' is a symlink", S("lnk", "inside"), F("lnk/x", b"through"))
    assert not (root / "inside/x").exists()


def test_unsafe_symlinked_parent_already_in_the_tree(jail: tuple[Path, Path, LayerFormat]) -> None:
    root, sentinel, fmt = jail
    os.symlink(sentinel, root / "out")  # as if a lower layer (or a race) had put it there
    _refused(root, sentinel, fmt, "parent 'out' is a symlink", F("out/x", b"pwned"))
    _refused(root, sentinel, fmt, "parent 'out' is a symlink", D("out/sub/x/"))
    _refused(root, sentinel, fmt, "parent 'out' is a symlink", F("out/secret", b"pwned"))


def test_unsafe_hardlink_outside(jail: tuple[Path, Path, LayerFormat]) -> None:
    root, sentinel, fmt = jail
    _refused(root, sentinel, fmt, "hardlink target .*escapes the layer root", H("h", "../sentinel/secret"))
    _refused(root, sentinel, fmt, "absolute hardlink target", H("h", str(sentinel / "secret")))


def test_unsafe_hardlink_through_a_symlink(jail: tuple[Path, Path, LayerFormat]) -> None:
    root, sentinel, fmt = jail
    os.symlink(sentinel, root / "out")
    _refused(root, sentinel, fmt, "parent 'out' is a symlink", H("h", "out/secret"))
    assert not (root / "h").exists()


def test_unsafe_hardlink_missing_or_a_directory(jail: tuple[Path, Path, LayerFormat]) -> None:
    root, sentinel, fmt = jail
    _refused(root, sentinel, fmt, "does not exist in the layer", H("h", "nothing"))
    _refused(root, sentinel, fmt, "is a directory", D("dd/"), H("h", "dd"))


@pytest.mark.parametrize(
    "name, what",
    [
        (".wh...", "climbs out of its directory"),
        ("inside/.wh...", "climbs out of its directory"),
        (".wh.", "must name a file"),
        ("inside/.wh..", "must name a file"),
        ("../.wh.sentinel", "escapes the layer root"),
        ("../sentinel/.wh.secret", "escapes the layer root"),
        (".wh.x/y", "whiteout name used as a directory"),
    ],
)
def test_unsafe_whiteout_names(jail: tuple[Path, Path, LayerFormat], name: str, what: str) -> None:
    root, sentinel, fmt = jail
    _refused(root, sentinel, fmt, what, WH(name))
    assert (root / "inside").is_dir() and os.listdir(root) == ["inside"]


def test_unsafe_whiteout_and_opaque_through_a_symlink(jail: tuple[Path, Path, LayerFormat]) -> None:
    root, sentinel, fmt = jail
    os.symlink(sentinel, root / "out")
    _refused(root, sentinel, fmt, "parent 'out' is a symlink", WH("out/.wh.secret"))
    _refused(root, sentinel, fmt, "parent 'out' is a symlink", WH("out/.wh..wh..opq"))


def test_unsafe_directory_over_a_symlink(jail: tuple[Path, Path, LayerFormat]) -> None:
    root, sentinel, fmt = jail
    os.symlink(sentinel, root / "out")
    _refused(root, sentinel, fmt, "a directory entry over a symlink", D("out/", 0o777))
    assert os.readlink(root / "out") == str(sentinel)


def test_file_over_a_symlink_replaces_the_link_not_its_target(jail: tuple[Path, Path, LayerFormat]) -> None:
    root, sentinel, fmt = jail
    os.symlink(sentinel / "secret", root / "out")
    apply(root, fmt, F("out", b"mine", 0o600), S("out2", "inside/old"))
    assert (root / "out").read_bytes() == b"mine" and not (root / "out").is_symlink()
    _untouched(root, sentinel)


def test_unknown_entry_type_is_refused(tmp_path: Path) -> None:
    info = tar_info("weird", b"Z", 0o644)
    with pytest.raises(UserError, match=r"layer\.tar: entry 'weird': unsupported tar entry type"):
        apply(tmp_path, FULL, F("ok", b"1"), (info, None))
    assert (tmp_path / "ok").read_bytes() == b"1"


# -- bounded work: size limits, header blocks, long names -----------------------------------


class _Counting(io.BytesIO):
    """A compressed stream that remembers how far it was read."""

    def read(self, n: int | None = -1) -> bytes:
        data = super().read(n)
        self.furthest = max(getattr(self, "furthest", 0), self.tell())
        return data


def _bomb(tmp_path: Path, fmt: LayerFormat, raw: bytes, limit: int) -> tuple[str, _Counting]:
    root = tmp_path / "root"
    root.mkdir()
    src = _Counting(gzip.compress(raw, compresslevel=1))
    with pytest.raises(UserError) as exc:
        apply_tar_layer(root, src, fmt, name="bomb.tar.gz", limit=SizeLimit(limit, "--max-image-bytes"))
    return str(exc.value), src


def test_decompression_bomb_stops_at_the_limit(tmp_path: Path, fmt: LayerFormat) -> None:
    raw = tar_bytes(F("zeros", bytes(64 << 20)))  # 64 MiB of zeros: about 64 KiB of gzip
    msg, _ = _bomb(tmp_path, fmt, raw, 1 << 20)
    assert msg == (
        "bomb.tar.gz: over the image size limit of 1.0 MiB (--max-image-bytes): more than 1.0 MiB written in this layer"
    )
    assert os.listdir(tmp_path / "root") == []  # refused before the file was made


def test_a_stream_past_the_limit_is_not_decompressed_further(tmp_path: Path, fmt: LayerFormat) -> None:
    small = [F(f"f{i}", os.urandom(256 << 10)) for i in range(64)]  # 16 MiB in 64 files, incompressible
    msg, src = _bomb(tmp_path, fmt, tar_bytes(*small), 1 << 20)
    assert msg == (
        "bomb.tar.gz: over the image size limit of 1.0 MiB (--max-image-bytes): "
        "more than 1.0 MiB uncompressed in this layer"
    )
    assert src.furthest < len(src.getvalue()) // 4  # the gzip stream was left mostly unread
    written = sum((tmp_path / "root" / n).stat().st_size for n in os.listdir(tmp_path / "root"))
    assert written <= 1 << 20


def test_the_layers_below_count_toward_the_limit(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    limit = SizeLimit(1 << 20, "--max-image-bytes", below=(1 << 20) - (64 << 10))
    with pytest.raises(
        UserError,
        match=r"more than 64\.0 KiB uncompressed in this layer after 960\.0 KiB in the "
        r"layers below",
    ):
        apply_tar_layer(
            root, io.BytesIO(tar_bytes(*[F(f"f{i}", bytes(16 << 10)) for i in range(8)])), FULL, name="l1", limit=limit
        )


def test_a_huge_tar_header_block_is_refused_before_it_is_read(tmp_path: Path) -> None:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, 64 << 20
    src = _Counting(info.tobuf(tarfile.USTAR_FORMAT) + bytes(64 << 20))
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(UserError) as exc:
        apply_tar_layer(root, src, FULL, name="hdr.tar")
    assert str(exc.value) == "hdr.tar: a tar header block of 64.0 MiB (at most 16.0 MiB)"
    assert src.furthest < len(src.getvalue()) // 8


def test_the_default_limit_is_the_free_disk_of_the_layer(tmp_path: Path) -> None:
    limit = free_disk_limit(tmp_path)
    sv = os.statvfs(tmp_path)
    assert 0 < limit.total <= sv.f_bavail * sv.f_frsize and limit.why == f"the free disk of {tmp_path} less a margin"


@pytest.mark.parametrize(
    "name, what",
    [
        ("d/" + "n" * 300, "entry 'd/" + "n" * 98 + "...': path has a name of 300 bytes; at most 255 (NAME_MAX)"),
        ("/".join(["d" * 200] * 25), "entry '" + "d" * 100 + "...': path is 5025 bytes long; at most 4095 (PATH_MAX)"),
    ],
)
def test_names_too_long_are_refused_naming_archive_and_entry(
    tmp_path: Path, fmt: LayerFormat, name: str, what: str
) -> None:
    with pytest.raises(UserError) as exc:
        apply(tmp_path, fmt, F(name, b"x"))
    assert str(exc.value) == f"layer.tar: {what}"
    assert os.listdir(tmp_path) == []


def test_long_symlink_targets_and_hardlink_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"layer\.tar: entry 'l': symlink target is longer than 4095 bytes"):
        apply(tmp_path, FULL, S("l", "/".join(["x" * 100] * 50)))
    with pytest.raises(UserError, match=r"layer\.tar: entry 'h': hardlink target has a name of 300 bytes"):
        apply(tmp_path, FULL, H("h", "y" * 300))


def test_overlay_xattrs_of_a_layer_are_never_set(tmp_path: Path) -> None:
    stats = apply(tmp_path, FULL, F("f", b"", xattrs={"user.overlay.opaque": "y", "user.ok": "1"}))
    assert "f: xattr user.overlay.opaque (overlayfs's own metadata)" in stats.skipped
    assert "user.overlay.opaque" not in os.listxattr(tmp_path / "f")


# -- DIFF refuses what FULL refuses, with the lower layers it does not hold -------------------

LOWER = [S("lnk", "target"), D("target/"), F("target/old", b"old"), F("file", b"f"), D("d/"), S("d/lnk", "../target")]


@pytest.mark.parametrize(
    "upper, what",
    [
        ([F("lnk/x", b"through")], "entry 'lnk/x': parent 'lnk' is a symlink; refusing to go through it"),
        ([D("lnk/sub/")], "entry 'lnk/sub': parent 'lnk' is a symlink; refusing to go through it"),
        ([WH("lnk/.wh.old")], "entry 'lnk/.wh.old': parent 'lnk' is a symlink; refusing to go through it"),
        ([WH("lnk/.wh..wh..opq")], "entry 'lnk/.wh..wh..opq': parent 'lnk' is a symlink; refusing to go through it"),
        ([D("lnk/")], "entry 'lnk': a directory entry over a symlink"),
        ([D("d/"), F("d/lnk/x", b"deeper")], "entry 'd/lnk/x': parent 'd/lnk' is a symlink; refusing to go through it"),
        ([H("h", "lnk/old")], "entry 'h': parent 'lnk' is a symlink; refusing to go through it"),
        ([F("file/x", b"under a file")], "entry 'file/x': parent 'file' is not a directory"),
        ([WH(".wh.file"), H("h", "file")], "entry 'h': hardlink target 'file' does not exist in the layer"),
    ],
)
def test_diff_refuses_what_full_refuses_through_lower_layers(tmp_path: Path, upper: list[Member], what: str) -> None:
    if not ROOT:
        pytest.skip("DIFF whiteouts need root")
    verdicts = []
    for fmt in (FULL, DIFF):
        lower, top = LowerTree(), tmp_path / f"{fmt.value}-l0"
        top.mkdir()
        apply(top, fmt, *LOWER, lower=lower)
        with pytest.raises(UserError) as exc:
            apply(child(tmp_path, top, fmt, f"{fmt.value}-l1"), fmt, *upper, lower=lower)
        verdicts.append(str(exc.value))
        assert os.listdir(top / "target") == ["old"]  # the lower layer is untouched
    assert verdicts == [f"layer.tar: {what}"] * 2


@pytest.mark.parametrize(
    "upper",
    [
        [WH(".wh.lnk"), F("lnk/x", b"a directory now")],  # the symlink removed first
        [D("d/"), WH("d/.wh..wh..opq"), F("d/lnk/x", b"hidden by the opaque marker")],
        [D("d/"), WH("d/.wh.lnk"), D("d/lnk/"), F("d/lnk/x", b"recreated")],
        [WH(".wh.file"), F("file/x", b"file removed first")],
    ],
)
def test_diff_accepts_what_full_accepts_over_lower_layers(tmp_path: Path, upper: list[Member]) -> None:
    if not ROOT:
        pytest.skip("DIFF whiteouts need root")
    lower, l0, full = LowerTree(), tmp_path / "l0", tmp_path / "full"
    l0.mkdir()
    apply(l0, DIFF, *LOWER, lower=lower)
    apply(child(tmp_path, l0, DIFF, "l1"), DIFF, *upper, lower=lower)
    full.mkdir()
    apply(full, FULL, *LOWER)
    apply(full, FULL, *upper)
    # what FULL made a directory, the DIFF layer holds as one (opaque where the lower one is hidden)
    path = next(info.name for info, _ in upper if info.name.endswith("/x"))
    assert (full / path).read_bytes() == (tmp_path / "l1" / path).read_bytes()


def test_diff_lower_tree_folds_in_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    if not ROOT:
        pytest.skip("DIFF whiteouts need root")
    lower = LowerTree()
    for i, members in enumerate([LOWER, [WH(".wh.lnk"), D("d/"), WH("d/.wh..wh..opq"), F("d/new", b"n")]]):
        (tmp_path / f"l{i}").mkdir()
        apply(tmp_path / f"l{i}", DIFF, *members, lower=lower)
    assert lower.kind(("lnk",)) is None and lower.kind(("d", "lnk")) is None
    assert lower.kind(("d", "new")) == "other" and lower.kind(("target",)) == "dir"
    assert lower.kind(("file", "x")) is None


def test_opaque_marks_use_the_drivers_xattr(tmp_path: Path) -> None:
    if not ROOT:
        pytest.skip("DIFF whiteouts need root")
    apply(tmp_path, DIFF, D("d/"), WH("d/.wh..wh..opq"), opaque_xattr="user.overlay.opaque")
    assert os.getxattr(tmp_path / "d", "user.overlay.opaque") == b"y"
    assert "trusted.overlay.opaque" not in os.listxattr(tmp_path / "d")


def test_an_xattr_name_with_a_nul_byte_is_one_line(tmp_path: Path) -> None:
    member = F("f", b"", xattrs={"user.a\0b": "1"})
    with pytest.raises(UserError, match=r"entry 'f': an xattr name 'user.a\\x00b' that is empty or holds a NUL byte$"):
        apply(tmp_path, FULL, member)


def test_a_missed_name_check_still_cannot_leave_the_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Confined by construction: with the '..' check switched off, the kernel (openat2 beneath the
    layer root, kernel/confined.py) refuses the way out, and nothing outside is written."""

    def unchecked(applier: object, e: object, name: str, what: str = "path") -> tuple[str, ...]:
        return tuple(p for p in name.split("/") if p not in ("", "."))

    monkeypatch.setattr(layer_apply, "_split", unchecked)
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    with pytest.raises(UserError, match=r"^layer\.tar: entry '\.\./outside/planted': path escapes the layer root"):
        apply(root, FULL, F("../outside/planted", b"x"))
    assert list(outside.iterdir()) == [] and list(root.iterdir()) == []
