"""Images from outside (image_sources): the final file list of an archive, the order DIFF layers
need, the entry bound, and a host directory as a one-layer image."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from layerbench.driver import LayerFormat
from layerbench.environment import RunEnvironment, applied
from layerbench.errors import UserError
from layerbench.images import image_sources
from layerbench.images.image_sources import ArchiveImage, HostDirImage, open_image

from .image_files import (
    DEV,
    WH,
    D,
    F,
    Layout,
    S,
    tar_bytes,
)


def _archive(tmp_path: Path, *tars: bytes) -> ArchiveImage:
    lay = Layout()
    lay.index([lay.manifest(list(tars))])
    image = open_image("oci", lay.write_dir(tmp_path / "image"))
    assert isinstance(image, ArchiveImage)
    return image


def test_the_final_file_list_folds_whiteouts_opaque_dirs_and_replacements(tmp_path: Path) -> None:
    lower = tar_bytes(
        D("a/"),
        F("a/x", b"0123456789"),
        F("a/y", b"abcde"),
        D("d/"),
        F("d/old", b"old"),
        F("f", b"a file, then a dir"),
        S("link", "a/x"),  # not a regular file: not in the list
    )
    upper = tar_bytes(
        WH("a/.wh.x"),
        WH("d/.wh..wh..opq"),
        F("d/new", b"1234567"),
        D("f/"),
        F("f/inside", b"12"),
        F("z", b"zz"),
        WH(".wh.z"),  # a whiteout hides the layers below only, not its own layer's z
    )
    image = _archive(tmp_path, lower, upper)
    assert image.layer_count == 2
    assert image.file_paths() == ["a/y", "d/new", "f/inside", "z"]
    assert image.total_files == 4 and image.total_bytes == 5 + 7 + 2 + 2


def test_diff_layers_must_be_applied_bottom_first(tmp_path: Path) -> None:
    image = _archive(tmp_path, tar_bytes(F("a", b"a")), tar_bytes(F("b", b"b")))
    (tmp_path / "l1").mkdir()
    with pytest.raises(ValueError, match="apply them bottom first"):
        image.apply(1, tmp_path / "l1", LayerFormat.DIFF)
    (tmp_path / "l0").mkdir()
    image.apply(0, tmp_path / "l0", LayerFormat.DIFF)
    image.apply(1, tmp_path / "l1", LayerFormat.DIFF)
    assert os.listdir(tmp_path / "l0") == ["a"] and os.listdir(tmp_path / "l1") == ["b"]


def test_what_a_hostile_layer_could_not_apply_is_kept_on_the_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lower = tar_bytes(D("dev/"), DEV("dev/null", tarfile.CHRTYPE, 1, 3))
    upper = tar_bytes(D("hidden/", xattrs={"user.fuseoverlayfs.opaque": "y"}), F("hidden/new", b"upper"))
    image = _archive(tmp_path, lower, upper)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # an unprivileged importer makes no device node
    skipped = [
        "dev/null: device nodes need root",
        "hidden: xattr user.fuseoverlayfs.opaque (fuse-overlayfs's own metadata)",
    ]
    for build in ("first", "again"):  # each build of the image starts the list anew
        root = tmp_path / build
        root.mkdir()
        image.apply(0, root, LayerFormat.FULL)
        image.apply(1, root, LayerFormat.FULL)
        assert image.skipped == skipped
        assert not (root / "dev" / "null").exists() and (root / "hidden" / "new").read_bytes() == b"upper"


def test_an_image_of_more_entries_than_allowed_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(image_sources, "MAX_ENTRIES", 3)
    image = _archive(tmp_path, tar_bytes(F("a"), F("b")), tar_bytes(F("c"), F("d")))
    with pytest.raises(UserError, match="more than 3 entries"):
        _ = image.total_files


def test_a_size_bound_given_is_the_images_limit(tmp_path: Path) -> None:
    with applied(RunEnvironment(tmp_path, max_image_bytes=1 << 20)):  # an explicit bound wins over the free disk
        image = _archive(tmp_path, tar_bytes(F("a", b"a")))
    assert image.limit is not None and image.limit.total == 1 << 20 and image.limit.why == "--max-image-bytes"


def test_a_host_directory_is_one_layer_of_its_regular_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "conf").write_bytes(b"12345")
    (src / "bin").write_bytes(b"123")
    os.symlink("etc/conf", src / "link")  # neither counted nor followed
    image = open_image("dir", src)
    assert isinstance(image, HostDirImage) and image.layer_count == 1
    assert image.file_paths() == ["bin", "etc/conf"] and image.total_files == 2 and image.total_bytes == 8
    root = tmp_path / "root"
    root.mkdir()
    image.apply(0, root, LayerFormat.FULL)
    assert (root / "etc" / "conf").read_bytes() == b"12345" and os.readlink(root / "link") == "etc/conf"


def test_a_dir_source_that_is_not_a_directory_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(UserError, match="needs a directory"):
        open_image("dir", tmp_path / "file")
